"""Helpers for every floor above the kernels.

    validation.py  argument checks shared by the functional ops, the
                   layers and the training code: dtypes, int pairs,
                   output sizes, allocation limits (as sklearn.utils.validation)
    layout.py      data_format: channels-first (NCHW) / channels-last (NHWC)
                   names, the transposes around the NCHW kernels, layout hints
"""
