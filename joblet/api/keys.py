"""Every Redis key, stream and channel joblet uses, in one place, under one prefix."""

from __future__ import annotations

from dataclasses import dataclass

from joblet.names import name_key

RUN_TASK = "joblet.run_job"
END_FIELD = b"end"
STDOUT_FIELD = b"o"
STDERR_FIELD = b"e"


@dataclass(frozen=True)
class Keys:
    """Key names for one installation (one prefix)."""

    prefix: str = "joblet:"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def jobs(self) -> str:
        """Sorted set of job ids by creation time."""
        return f"{self.prefix}jobs"

    @property
    def jobs_sweep(self) -> str:
        """The rank in `jobs` where the sweep of expired records' entries goes on."""
        return f"{self.prefix}jobs-sweep"

    @property
    def live(self) -> str:
        """Sorted set (by creation time) holding at least every job that has not ended
        (store_index.py)."""
        return f"{self.prefix}live"

    @property
    def live_whole(self) -> str:
        """Set once `live` was made from every kept record (a Redis without it makes it)."""
        return f"{self.prefix}live-whole"

    def log(self, job_id: str) -> str:
        return f"{self.prefix}log:{job_id}"

    def claim(self, job_id: str) -> str:
        return f"{self.prefix}claim:{job_id}"

    def claim_try(self, job_id: str) -> str:
        """The token of the call that claimed the job (10 minutes: a resent call finds it)."""
        return f"{self.prefix}claim-try:{job_id}"

    def nonce(self, nonce: str) -> str:
        """A run-job message's nonce, claimed by its first delivery (replays are refused)."""
        return f"{self.prefix}nonce:{nonce}"

    def dropped(self, node: str) -> str:
        """Hash of messages a worker dropped: reason -> count."""
        return f"{self.prefix}dropped:{node}"

    def stop(self, job_id: str) -> str:
        return f"{self.prefix}stop:{job_id}"

    @property
    def stop_channel(self) -> str:
        return f"{self.prefix}stops"

    @property
    def events(self) -> str:
        """Fleet-wide notices to workers: a network's jobs changed, a network was deleted."""
        return f"{self.prefix}events"

    def node(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    @property
    def node_pattern(self) -> str:
        return f"{self.prefix}node:*"

    @property
    def nodes(self) -> str:
        """Hash of every node ever seen: name -> its last heartbeat (JSON, with "beat" time);
        outlives the expiring presence key, so a node that stopped beating is shown down."""
        return f"{self.prefix}nodes"

    @property
    def drained(self) -> str:
        """Hash of draining nodes: name -> time the drain began (no new jobs go there)."""
        return f"{self.prefix}drained"

    def held(self, node: str) -> str:
        """Set of workflow jobs pinned to a draining `node`, not sent: its undrain sends them
        (store_nodes.py)."""
        return f"{self.prefix}held:{node}"

    def lost_sweep(self, node: str, beat: float) -> str:
        """Taken (SET NX, short TTL) by the one worker marking a down node's jobs LOST."""
        return f"{self.prefix}lost-sweep:{node}:{beat:.3f}"

    @property
    def lost_swept(self) -> str:
        """Hash: node -> the last beat after which its jobs were all marked LOST."""
        return f"{self.prefix}lost-swept"

    @property
    def node_index(self) -> str:
        """Sorted set of nodes that sent a heartbeat lately (score: the sender's expiry time), so
        live nodes are found without scanning the keyspace; each node's own key, with its TTL,
        says whether it is alive."""
        return f"{self.prefix}node-index"

    @property
    def networks(self) -> str:
        """Hash of user network definitions (name -> JSON)."""
        return f"{self.prefix}networks"

    @property
    def volumes(self) -> str:
        """Hash of volume definitions (name -> JSON)."""
        return f"{self.prefix}volumes"

    def volume_users(self, name: str) -> str:
        """Set of the jobs that started with volume `name` (workers add them at the start and
        take them out at the end; its delete refuses while one has not ended: volumes.py)."""
        return f"{self.prefix}volume-users:{name}"

    @property
    def volumes_deleted(self) -> str:
        """Hash of deleted volumes (name -> the last deleted definition's JSON): a host removes
        a volume's data only when this names the generation it holds."""
        return f"{self.prefix}volumes-deleted"

    def ipam(self, network: str) -> str:
        return f"{self.prefix}ipam:{network}"

    def members(self, network: str) -> str:
        """Hash of a user network's running jobs: job id -> {"ip", "names"} (discovery)."""
        return f"{self.prefix}members:{network}"

    def placed(self, network: str) -> str:
        """Hash of a user network's jobs queued for a node and not seen running: job id ->
        node (store_homes.py)."""
        return f"{self.prefix}placed:{network}"

    def placing(self, network: str) -> str:
        """A submitter's hold on a user network while it places a job and writes where
        (store_homes.py: two at once each read no home and went to two nodes)."""
        return f"{self.prefix}placing:{network}"

    def ipam_cursor(self, network: str) -> str:
        return f"{self.prefix}ipam:{network}:cursor"

    def ipam_try(self, network: str, token: str) -> str:
        """One allocating call's answer, for 10 minutes (store_ipam.py)."""
        return f"{self.prefix}ipam:{network}:try:{token}"

    def workflow(self, wf_id: str) -> str:
        """A workflow's record (JSON)."""
        return f"{self.prefix}workflow:{wf_id}"

    @property
    def workflows(self) -> str:
        """Sorted set of workflow ids by creation time."""
        return f"{self.prefix}workflows"

    @property
    def workflow_names(self) -> str:
        """Hash of workflow name -> the id of its newest run."""
        return f"{self.prefix}workflow-names"

    def workflow_queued(self, wf_id: str, name: str) -> str:
        """Set once per workflow job: "1" queued, "0" canceled (never both)."""
        return f"{self.prefix}workflow:{wf_id}:queued:{name}"

    def name(self, name: str, as_given: bool = False) -> str:
        """The job id holding a job name, whatever its case (lookups in /etc/hosts ignore
        it: `WEB` would shadow `web`); a name is free again once that job has ended. Versions
        before 2026-11-29 wrote the name as given (`as_given`): checked too, while theirs run."""
        return f"{self.prefix}name:{name if as_given else name_key(name)}"

    def stats(self, job_id: str) -> str:
        """Hash of a running job's latest resource sample (short TTL), written by its worker."""
        return f"{self.prefix}stats:{job_id}"
