"""deploy/: the SAM template passes cfn-lint (with the SAM transform), and its app imports as
Lambda would import it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TEMPLATE = DEPLOY / "template.yaml"
LINT = ["-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *LINT, str(path)], capture_output=True, text=True, timeout=120
    )


def test_the_template_passes_cfn_lint() -> None:
    proc = cfn_lint(TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_would_catch_a_mistake(tmp_path: Path) -> None:
    # The check above is only worth something if cfn-lint reads the SAM resources.
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text()
    assert "!Ref TimeoutSeconds" in text
    broken.write_text(text.replace("!Ref TimeoutSeconds", "!Ref TimeoutSecondz"))
    shutil.copytree(DEPLOY / "app", tmp_path / "app")
    proc = cfn_lint(broken)
    assert proc.returncode != 0
    assert "E1020 'TimeoutSecondz'" in proc.stdout


def test_the_template_wires_the_function_to_the_bucket_schedule_and_url() -> None:
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE))
    assert not problems
    props: dict[str, Any] = template["Resources"]["FlowFunction"]["Properties"]
    env = props["Environment"]["Variables"]
    assert env["ASYNCFLOW_BACKEND"] == {"Fn::Sub": "s3://${RunsBucket}/asyncflow"}
    assert props["Policies"] == [{"S3CrudPolicy": {"BucketName": {"Ref": "RunsBucket"}}}]
    assert props["Events"]["Resume"]["Type"] == "Schedule"
    assert props["FunctionUrlConfig"] == {"AuthType": {"Ref": "UrlAuthType"}}
    assert template["Parameters"]["UrlAuthType"]["Default"] == "AWS_IAM"
    assert template["Resources"]["RunsBucket"]["DeletionPolicy"] == "Retain"
    # A public URL needs the token; with IAM auth the signature holds the Authorization header.
    rule = template["Rules"]["PublicUrlNeedsToken"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "UrlAuthType"}, "NONE"]}
    assert env["ASYNCFLOW_TOKEN"] == {
        "Fn::If": ["UseToken", {"Ref": "Token"}, {"Ref": "AWS::NoValue"}]
    }


def run_app(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import json, app;"
        "print(json.dumps(app.handler({'trigger': 'remind', 'args': {'text': 'hi'}}, None)))"
    )
    full = {k: v for k, v in os.environ.items() if k != "ASYNCFLOW_BACKEND"}
    full.update(env, AWS_LAMBDA_FUNCTION_NAME="asyncflow-app")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=DEPLOY / "app",
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_app_needs_a_backend_inside_lambda() -> None:
    proc = run_app()
    assert proc.returncode != 0
    assert "asyncflow.ConfigError: no backend configured for AWS Lambda" in proc.stderr
    assert "ASYNCFLOW_BACKEND=s3://" in proc.stderr


def test_the_app_runs_with_a_backend(tmp_path: Path) -> None:
    proc = run_app(ASYNCFLOW_BACKEND=f"file:{tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert '"status": "paused"' in proc.stdout
    assert '"logs": ["noted: hi"]' in proc.stdout
