"""An isolated multi-node network built from Linux network namespaces, for
multi-node tests of the worker daemons (import it with tests/cluster on sys.path).

    netns.require_root()
    with netns.Cluster(2, "mytest", rate="1gbit") as cluster:
        server = cluster.popen(cluster.nodes[1], [...])
        cluster.run(cluster.driver_ns, [...], check=True)
        cluster.link_down(1)

Layout of Cluster(n, tag): namespaces sbpf<tag>0 .. sbpf<tag><n-1> (the nodes)
and sbpf<tag>d (the driver), each with `lo` and an `eth0` whose veth peer is a
port of the bridge `br0`, which lives in a namespace of its own, sbpf<tag>br.
Nothing is created in the root namespace, so the host's interfaces and routes
are never touched and the cluster cannot reach the host's network.
"""
import atexit
import os
import re
import signal
import subprocess
import threading
import time
import zlib

# The kernel's interface-name limit (IFNAMSIZ - 1); namespace names keep to it too.
_MAX_NAME = 15

# A tag ends with a letter: a name of tag T (sbpf T + digits | "br" | "d") then
# can never equal a name of another tag ("a" node 12 would be "a1" node 2).
_TAG = re.compile(r"[a-z]([a-z0-9]*[a-z])?")

_RATE = re.compile(r"(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|tbit)")
_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}

# Token bucket filter parameters (see _tbf_args). The bucket must hold at least
# what arrives in one timer tick, rate/HZ; HZ=100 is the lowest HZ the kernel
# can be built with, so rate/100 is enough whatever the kernel. The floor keeps
# slow links able to pass several full-size frames at once. 50 ms of queue is
# far above the RTT on a bridge, so TCP fills the link without tail drops.
_MIN_HZ = 100
_MIN_BURST_BYTES = 32 * 1024
_TBF_LATENCY = "50ms"

_BRIDGE = "br0"
_SUBNETS = 254 * 256  # 10.1.0.0/24 .. 10.254.255.0/24


def _parse_rate(rate):
    """bits per second of a tc rate such as "100mbit"."""
    match = _RATE.fullmatch(rate)
    if not match:
        raise ValueError(f"rate {rate!r}: expected a number and one of {', '.join(_RATE_UNITS)}")
    return float(match.group(1)) * _RATE_UNITS[match.group(2)]


def _tbf_args(rate):
    burst = max(_MIN_BURST_BYTES, int(_parse_rate(rate) / 8 / _MIN_HZ))
    return ["tbf", "rate", rate, "burst", str(burst), "latency", _TBF_LATENCY]


def _command(argv):
    """Runs argv; raises RuntimeError naming the command and its stderr if it fails."""
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def list_namespaces():
    """Names of the named network namespaces (`ip netns list`)."""
    return [line.split()[0] for line in _command(["ip", "netns", "list"]).splitlines() if line]


def _kill_processes(namespace):
    """SIGKILLs every process inside the namespace until none is left (they may fork)."""
    deadline = time.monotonic() + 5
    while True:
        result = subprocess.run(["ip", "netns", "pids", namespace], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True)
        pids = [int(pid) for pid in result.stdout.split()] if result.returncode == 0 else []
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _delete_namespaces(names):
    """Kills the processes in, then deletes, those of `names` that exist. Deleting
    a namespace destroys its interfaces, and with them the veth peers."""
    existing = set(list_namespaces())
    for name in names:
        if name in existing:
            _kill_processes(name)
            subprocess.run(["ip", "netns", "delete", name], stdin=subprocess.DEVNULL,
                           capture_output=True)


def require_root():
    """Exits 77 (skipped, for ctest) with "SKIP: <reason>" unless this process can
    build a Cluster: root, and `ip netns`, veth and bridges usable (a container
    may refuse them with EPERM even to root)."""
    def skip(reason):
        print(f"SKIP: {reason}", flush=True)
        raise SystemExit(77)

    if os.geteuid() != 0:
        skip("network namespaces need root")
    # '_' cannot appear in a tag, so the probe cannot clash with a Cluster.
    probe = f"sbpf_p{os.getpid()}"
    steps = [["ip", "netns", "add", probe],
             ["ip", "netns", "exec", probe, "true"],
             ["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
             ["ip", "-n", probe, "link", "add", "pb", "type", "bridge"]]
    try:
        for step in steps:
            _command(step)
    except (OSError, RuntimeError) as error:
        skip(f"cannot build a namespace network: {error}")
    finally:
        _delete_namespaces([probe])


class Cluster:
    """n node namespaces and a driver namespace on one bridge; see the module doc.

    nodes, addrs: the node namespaces and their IPv4 addresses (10.a.b.i+2);
    driver_ns, driver_addr: the driver's (10.a.b.1); bridge_ns; subnet "10.a.b.0/24".
    The subnet comes from subnet_index, or else from a hash of the tag. Clusters
    never share a bridge or a route, so overlapping subnets would still work; a
    distinct subnet only keeps the addresses in logs of concurrent tests apart.
    rate (a tc rate such as "100mbit"): cap on each node's eth0 egress and on
    its bridge port's egress, so both directions of every node are capped; the
    driver's own link is not capped.

    Creating a cluster first removes leftovers of a crashed run with the same
    tag; two tests running at once must therefore use different tags.
    """

    def __init__(self, n, tag, rate=None, subnet_index=None):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n = {n!r}: need at least one node")
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r}: use lowercase letters and digits, "
                             "starting and ending with a letter")
        if rate is not None:
            _parse_rate(rate)
        if subnet_index is None:
            subnet_index = zlib.crc32(tag.encode()) % _SUBNETS
        elif not 0 <= subnet_index < _SUBNETS:
            raise ValueError(f"subnet_index {subnet_index}: must be in [0, {_SUBNETS})")

        prefix = "sbpf" + tag
        self.nodes = [f"{prefix}{i}" for i in range(n)]
        self.driver_ns = prefix + "d"
        self.bridge_ns = prefix + "br"
        too_long = [name for name in self.nodes + [self.bridge_ns] if len(name) > _MAX_NAME]
        if too_long:
            raise ValueError(f"tag {tag!r}: namespace name {too_long[0]!r} is longer "
                             f"than {_MAX_NAME} characters")

        net = f"10.{1 + subnet_index // 256}.{subnet_index % 256}"
        self.subnet = f"{net}.0/24"
        self.driver_addr = f"{net}.1"
        self.addrs = [f"{net}.{i + 2}" for i in range(n)]
        self.rate = rate
        self._name_pattern = re.compile(re.escape(prefix) + r"(\d+|br|d)")
        self._processes = []

    def __enter__(self):
        _track(self)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _namespaces(self):
        return self.nodes + [self.driver_ns, self.bridge_ns]

    def _create(self):
        # Any sbpf<tag>... namespace, also of a run with more nodes than this one.
        _delete_namespaces([name for name in list_namespaces()
                            if self._name_pattern.fullmatch(name)])
        for name in self._namespaces():
            _command(["ip", "netns", "add", name])
            _command(["ip", "-n", name, "link", "set", "dev", "lo", "up"])
        _command(["ip", "-n", self.bridge_ns, "link", "add", _BRIDGE, "type", "bridge"])
        _command(["ip", "-n", self.bridge_ns, "link", "set", "dev", _BRIDGE, "up"])

        ports = [f"n{i}" for i in range(len(self.nodes))] + ["drv"]
        addrs = self.addrs + [self.driver_addr]
        tbf = _tbf_args(self.rate) if self.rate is not None else None
        for name, port, addr in zip(self.nodes + [self.driver_ns], ports, addrs):
            # Both ends are created directly in their namespaces: no interface
            # ever exists in the root namespace, even for a moment.
            _command(["ip", "-n", name, "link", "add", "eth0", "type", "veth",
                      "peer", "name", port, "netns", self.bridge_ns])
            _command(["ip", "-n", self.bridge_ns, "link", "set", "dev", port,
                      "master", _BRIDGE, "up"])
            _command(["ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "eth0"])
            _command(["ip", "-n", name, "link", "set", "dev", "eth0", "up"])
            if tbf and name != self.driver_ns:
                _command(["tc", "-n", name, "qdisc", "add", "dev", "eth0", "root"] + tbf)
                _command(["tc", "-n", self.bridge_ns, "qdisc", "add", "dev", port, "root"] + tbf)

    def _argv(self, ns, argv):
        if ns not in self._namespaces():
            raise ValueError(f"{ns!r} is not a namespace of this cluster")
        return ["ip", "netns", "exec", ns] + list(argv)

    def popen(self, ns, argv, **kw):
        """subprocess.Popen of argv inside namespace ns; killed when the cluster closes."""
        process = subprocess.Popen(self._argv(ns, argv), **kw)
        self._processes.append(process)
        return process

    def run(self, ns, argv, **kw):
        """subprocess.run of argv inside namespace ns (same keywords, same result)."""
        return subprocess.run(self._argv(ns, argv), **kw)

    def link_down(self, i):
        """Cuts node i's cable: its eth0 goes down (the bridge port loses carrier)."""
        _command(["ip", "-n", self.nodes[i], "link", "set", "dev", "eth0", "down"])

    def link_up(self, i):
        """Reconnects node i; its address and subnet route come back with the link."""
        _command(["ip", "-n", self.nodes[i], "link", "set", "dev", "eth0", "up"])

    def close(self):
        """Kills every process in the cluster and deletes its namespaces. Idempotent."""
        _delete_namespaces(self._namespaces())
        for process in self._processes:  # reap what popen started; it is dead now
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._processes = []
        if self in _open_clusters:
            _open_clusters.remove(self)


# Clusters not yet closed, for cleanup at interpreter exit or on SIGTERM/SIGINT;
# a with block alone cannot cover a process killed by a signal. No lock: a
# signal handler runs between two bytecodes of the main thread, so it could
# interrupt the lock's holder and then wait for it forever.
_open_clusters = []
_previous_handlers = {}


def _track(cluster):
    _open_clusters.append(cluster)
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works in the main thread only; atexit still applies
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        # An ignored signal stays ignored; the handler is installed once.
        if signum not in _previous_handlers and previous is not signal.SIG_IGN:
            # None: a handler not set from Python, which cannot be restored.
            _previous_handlers[signum] = signal.SIG_DFL if previous is None else previous
            signal.signal(signum, _on_signal)


def _close_all():
    for cluster in list(reversed(_open_clusters)):
        cluster.close()


def _on_signal(signum, frame):
    """Closes every cluster, then lets the signal do what it did before."""
    _close_all()
    previous = _previous_handlers.pop(signum)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)  # SIGINT: Python's handler raises KeyboardInterrupt
    else:
        os.kill(os.getpid(), signum)  # SIG_DFL: die of the signal, as without us


atexit.register(_close_all)
