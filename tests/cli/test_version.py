"""`convcore --version` / `-V` print the version of the convcore that runs,
as `convcore info` does, and exit 0 without needing a command."""
import pytest

import convcore
from convcore import cli


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag_prints_version_and_exits_0(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([flag])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"convcore {convcore.__version__}"


def test_version_matches_the_package_metadata_when_installed():
    metadata = pytest.importorskip("importlib.metadata")
    try:
        installed = metadata.version("convcore")
    except metadata.PackageNotFoundError:
        pytest.skip("convcore is not installed as a distribution here")
    assert installed == convcore.__version__
