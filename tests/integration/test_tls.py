"""TLS to Redis (rediss://) with a throwaway CA: a worker and rnx talk only over TLS."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.conftest import BIN, Host, need
from tests.integration.certs import issue


def test_rnx_and_worker_over_tls(tmp_path):
    need(os.geteuid() == 0, "needs root")
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    ca_key, ca_cert = issue(tmp_path, "joblet-test-ca", is_ca=True)
    srv_key, srv_cert = issue(tmp_path, "localhost", ca=(ca_key, ca_cert), server=True)
    _, other_ca = issue(tmp_path, "other-ca", is_ca=True)
    port = 16380
    url = f"rediss://localhost:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca_cert}"
    h = Host(url, "tls")  # no private Redis of the suite: this one speaks TLS only
    redis = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            h.netns,
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(srv_cert),
            "--tls-key-file",
            str(srv_key),
            "--tls-ca-cert-file",
            str(ca_cert),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    worker = None
    env = {**os.environ, **h.env}

    def rnx(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", h.netns, str(BIN / "rnx"), *args],
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        h.in_ns("ip", "link", "set", "lo", "up")
        log = open(h.tmp / "worker.log", "ab")  # noqa: SIM115
        worker = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{h.netns}", str(BIN / "joblet-worker"), "--node", "tls"],
            env=env,
            stdout=log,
            stderr=log,
        )
        done = rnx("run", "--network=none", "echo", "over tls")  # waits for the worker if need be
        assert done.returncode == 0 and done.stdout == "over tls\n", done.stderr
        wrong = rnx("list", extra={"JOBLET_REDIS_URL": url.replace(str(ca_cert), str(other_ca))})
        assert wrong.returncode == 1 and "certificate verify failed" in wrong.stderr
        plain = rnx("list", extra={"JOBLET_REDIS_URL": f"redis://localhost:{port}/0"})
        assert plain.returncode == 1 and "cannot reach Redis" in plain.stderr
        typo = rnx("list", extra={"JOBLET_REDIS_URL": url.replace("ssl_cert_reqs", "ssl_cert_req")})  # a traceback
        assert typo.returncode != 0 and typo.stderr.strip().splitlines() == [
            f"rnx: rediss://localhost:{port}/0?ssl_cert_req=required&ssl_ca_certs={ca_cert}: 'ssl_cert_req' in its "
            "query is not an option of a Redis URL"
        ], typo.stderr
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        redis.terminate()
        redis.wait(timeout=10)
        h.close()
