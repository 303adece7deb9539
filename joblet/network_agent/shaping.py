"""Bandwidth limits: a tc token bucket (tbf) per direction. The parameters come from the plan
(pure); `apply` runs them: into the job on the host end of each veth, out of the job on its
own end inside its namespace (before its command starts)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from joblet.errors import NetworkError
from joblet.network_agent.plan import NetPlan


def tbf_args(rate_bits: int, mtu: int = 1500) -> list[str]:
    """`tc qdisc ... tbf` arguments: a bucket of 10 ms at the rate (at least two packets), so
    the first second is not a burst at line rate, and a short queue (50 ms)."""
    burst = max(rate_bits // 8 // 100, 2 * mtu + 100)
    return ["rate", f"{rate_bits}bit", "burst", str(burst), "latency", "50ms"]


@dataclass(frozen=True)
class Bucket:
    device: str
    rate_bits: int
    mtu: int
    inside: bool  # on the job's end, in its namespace

    def tc_line(self) -> str:
        return f"qdisc replace dev {self.device} root tbf {' '.join(tbf_args(self.rate_bits, self.mtu))}"


def buckets(plan: NetPlan) -> list[Bucket]:
    """The token buckets of a plan: into the job (host ends), out of it (job ends)."""
    found = []
    for att in plan.attachments:
        if plan.rate_in:
            found.append(Bucket(att.host_ifname, plan.rate_in, att.mtu, inside=False))
        if plan.rate_out:
            found.append(Bucket(att.ifname, plan.rate_out, att.mtu, inside=True))
    return found


def apply(plan: NetPlan, netns_path: str | None) -> None:
    """Install the plan's buckets: one `tc -batch` on the host, one inside the namespace."""
    planned = buckets(plan)
    outside = "".join(b.tc_line() + "\n" for b in planned if not b.inside)
    inside = "".join(b.tc_line() + "\n" for b in planned if b.inside)
    if outside:
        _tc(["tc", "-batch", "-"], "the host ends of the job's links", outside)
    if inside and netns_path is not None:
        _tc(["nsenter", f"--net={netns_path}", "tc", "-batch", "-"], "the job's interfaces", inside)


def _tc(argv: list[str], what: str, batch: str) -> None:
    proc = subprocess.run(argv, input=batch, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetworkError(f"failed to limit bandwidth on {what}: {proc.stderr.strip()}")
