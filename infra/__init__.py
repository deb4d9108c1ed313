"""Deployment tooling (never zipped into a Lambda): CloudFormation templates, ``make package``
and ``make deploy``. See docs/deploy.md."""
