/* What the kernels were compiled with, for `convcore info`: setup.py
   defines these for the openmp_info module; "unknown" in other builds. */
#ifndef CONVCORE_BUILD_INFO_H
#define CONVCORE_BUILD_INFO_H

#ifndef CONVCORE_BUILD_CC
#define CONVCORE_BUILD_CC "unknown"
#endif
#ifndef CONVCORE_BUILD_FLAGS
#define CONVCORE_BUILD_FLAGS "unknown"
#endif
#ifndef CONVCORE_BUILD_NATIVE
#define CONVCORE_BUILD_NATIVE 0
#endif

#endif /* CONVCORE_BUILD_INFO_H */
