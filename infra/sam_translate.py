"""Writes template.yaml as CloudFormation sees it after the SAM transform, offline.

The policy scanner (checkov, in the test command) reads plain CloudFormation: the roles,
permissions and event invoke configs SAM generates from `AWS::Serverless::Function` exist
only after the transform. This runs AWS's own translator (samtranslator, which the SAM CLI
brings) with its bundled map of AWS managed policies, so it needs no account and no network.

    .local/venv/bin/python infra/sam_translate.py template.yaml .local/template.cfn.json
"""

import json
import os
import sys

import boto3
from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

# Any region does: the scanner reads the template's shape, not its values.
REGION = "us-east-1"


def main(source: str, target: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    with open(source, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    # What `sam package` does: local code becomes an S3 object (any name; never fetched).
    for name, resource in template.get("Resources", {}).items():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(properties.get("CodeUri"), str):
            properties["CodeUri"] = f"s3://packaged-code/{name}.zip"
    session = boto3.session.Session(region_name=REGION)
    translator = Translator(managed_policy_map=None, sam_parser=Parser(), boto_session=session)
    translated = translator.translate(
        template, parameter_values={}, get_managed_policy_map=lambda: get_bundled_managed_policy_map("aws")
    )
    with open(target, "w", encoding="utf-8") as f:
        json.dump(translated, f, indent=1, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} TEMPLATE OUTPUT")
    sys.exit(main(sys.argv[1], sys.argv[2]))
