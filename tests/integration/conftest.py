"""Fixtures the integration modules share.

* ``prod_package``: ``chalice package`` of the project's ``prod`` stage (``infra.package``),
  once per session: ``{"dir": the output directory, "template": sam.json parsed}``; the
  output is reproducible (test_package checks it), so modules reading the same stage's
  template need not package again;
* ``prod_package_lint``: cfn-lint's run on that ``sam.json`` (and its SAM transform), once.
"""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def prod_package(tmp_path_factory):
    from infra import package

    target = package.chalice_package("prod", tmp_path_factory.mktemp("package"))
    return {"dir": target, "template": json.loads((target / "sam.json").read_text())}


@pytest.fixture(scope="session")
def prod_package_lint(prod_package):
    from infra import package

    return package.cfn_lint(prod_package["dir"] / "sam.json")
