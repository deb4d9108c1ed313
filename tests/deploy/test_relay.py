"""The loopback relay of the deploy suite rewrites pusher-js's paths exactly as the stage's
CloudFront Function does on AWS: the function's own code (infra.templates) runs in Node on the
same paths and both must agree. (No emulator needed: this runs in make test.)"""
from __future__ import annotations

import json
import shutil
import subprocess
from urllib.parse import parse_qsl

import pytest

from infra.templates import websocket_path_function_code
from tests.deploy.relay import rewrite

PATHS = [
    "/app/app-key?protocol=7&client=js&version=8.4.0&flash=false",
    "/app/app-key/?protocol=7",
    "/app/no-such-key?protocol=7",
    "/app/app-key?protocol=7&app_key=own-key",
    "/?token=abc.def.ghi",
    "/",
    "/app/",
    "/app/a/b",
    "/dev",
    "/app/bad%20key",
]


def cloudfront(paths):
    """What the CloudFront Function answers for each path: ``None`` (403) or the query."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed (make node)")
    script = websocket_path_function_code("dev") + """
const out = [];
for (const path of JSON.parse(process.argv[1])) {
  const [uri, query] = path.split('?');
  const querystring = {};
  for (const pair of (query || '').split('&').filter(Boolean)) {
    const [name, value] = pair.split('=');
    querystring[name] = { value: value || '' };
  }
  const result = handler({ request: { uri, querystring } });
  if (result.statusCode) { out.push(null); continue; }
  out.push({ uri: result.uri,
             query: Object.entries(result.querystring).map(([k, v]) => [k, v.value]) });
}
process.stdout.write(JSON.stringify(out));
"""
    answer = subprocess.run([node, "-e", script, json.dumps(paths)], capture_output=True,
                            text=True, timeout=30, check=True)
    return json.loads(answer.stdout)


def test_the_relay_rewrites_as_the_cloudfront_function():
    expected = cloudfront(PATHS)
    assert expected.count(None) >= 4  # the function refuses some of these: the list tests both
    for path, function in zip(PATHS, expected):
        query = rewrite(path)
        if function is None:
            assert query is None, path
        else:
            assert function["uri"] == "/dev"
            assert query is not None, path
            assert sorted(parse_qsl(query, keep_blank_values=True)) == sorted(
                map(tuple, function["query"])), path

