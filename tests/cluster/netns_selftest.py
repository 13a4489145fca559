#!/usr/bin/python3
"""Self-test of netns.Cluster: nodes and driver reach each other over TCP, the
host's root namespace is left untouched, a rate cap holds in both directions,
link_down cuts a node off and link_up restores it, and nothing is left behind,
whether the with block ends, a leftover of a crashed run is in the way, or the
process is killed by SIGTERM/SIGINT.

The rate checks are the one place this test looks at time, because the cap is
what it tests: 4 MB at 20 Mbit/s cannot take less than ~1.6 s, and the lower
bound of 1.2 s cannot be met early by a slow or loaded machine.

Exit 0 pass, 1 fail, 77 skipped (not root, or namespaces unusable).
"""
import os
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import netns  # noqa: E402

PYTHON = "/usr/bin/python3"
CAP = "20mbit"
CAP_BITS = 20e6
BIG = 4 * 1000 * 1000  # bytes: 1.6 s at the cap
MIN_CAPPED_S = 1.2
MIN_SPEEDUP = 4  # uncapped must move BIG at least this much faster than capped

# Serves `count` connections on an ephemeral port of ADDR, printing the port
# first: each connection is read to EOF and answered with the byte count.
SERVER = r"""
import socket, sys
addr, count = sys.argv[1], int(sys.argv[2])
listener = socket.socket()
listener.bind((addr, 0))
listener.listen(count)
listener.settimeout(30)
print(listener.getsockname()[1], flush=True)
for _ in range(count):
    conn, _ = listener.accept()
    conn.settimeout(30)
    received = 0
    while chunk := conn.recv(1 << 16):
        received += len(chunk)
    conn.sendall(str(received).encode())
    conn.close()
"""

# Sends NBYTES to ADDR:PORT, then prints "ok <bytes the server counted> <seconds
# from connected to counted>", or "error <why>" and exits 1.
CLIENT = r"""
import socket, sys, time
addr, port, nbytes, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
try:
    conn = socket.create_connection((addr, port), timeout=timeout)
    conn.settimeout(30)
    start = time.monotonic()
    conn.sendall(bytes(nbytes))
    conn.shutdown(socket.SHUT_WR)
    counted = b""
    while chunk := conn.recv(64):
        counted += chunk
    print("ok", int(counted), time.monotonic() - start)
except OSError as error:
    print("error", error)
    sys.exit(1)
"""

failures = []


def check(condition, message):
    print(("ok:   " if condition else "FAIL: ") + message, flush=True)
    if not condition:
        failures.append(message)
    return condition


def start_server(cluster, ns, addr, count=1):
    """The server process and its port."""
    server = cluster.popen(ns, [PYTHON, "-c", SERVER, addr, str(count)],
                           stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([server.stdout], [], [], 10)
    line = server.stdout.readline() if ready else ""
    if not line.strip():
        raise RuntimeError(f"server in {ns} on {addr} did not start")
    return server, int(line)


def send(cluster, ns, addr, port, nbytes, connect_timeout=5):
    """(bytes the server counted or None, transfer seconds, client output)."""
    result = cluster.run(ns, [PYTHON, "-c", CLIENT, addr, str(port), str(nbytes),
                              str(connect_timeout)],
                         capture_output=True, text=True, timeout=connect_timeout + 60)
    words = result.stdout.split()
    if result.returncode != 0 or words[:1] != ["ok"]:
        return None, None, (result.stdout + result.stderr).strip()
    return int(words[1]), float(words[2]), result.stdout.strip()


def transfer(cluster, src_ns, dst_ns, dst_addr, nbytes):
    """Seconds to move nbytes from src_ns to a fresh server in dst_ns, or None."""
    _, port = start_server(cluster, dst_ns, dst_addr)
    counted, seconds, output = send(cluster, src_ns, dst_addr, port, nbytes)
    if not check(counted == nbytes, f"{src_ns} -> {dst_ns} ({dst_addr}): server counted "
                 f"{counted} of {nbytes} bytes [{output}]"):
        return None
    return seconds


def root_view():
    """The root namespace's interfaces and IPv4 addresses."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    return ({line.split(":")[1].strip() for line in links.splitlines()},
            {line.split()[3] for line in addrs.stdout.splitlines()})


def leftovers(tag):
    return [name for name in netns.list_namespaces() if name.startswith("sbpf" + tag)]


def test_reachability(cluster):
    """(a) node 0 reaches node 1 and the driver; the driver reaches node 1."""
    for src, dst, addr in [(cluster.nodes[0], cluster.nodes[1], cluster.addrs[1]),
                           (cluster.nodes[0], cluster.driver_ns, cluster.driver_addr),
                           (cluster.driver_ns, cluster.nodes[1], cluster.addrs[1])]:
        transfer(cluster, src, dst, addr, 100_000)


def test_root_isolated(cluster, root_before):
    """(b) The root namespace gains no interface or address and has no route of its
    own to the cluster. No packet is sent from it: with a default route, a connect
    would leave the machine."""
    links, addrs = root_view()
    check((links, addrs) == root_before,
          f"root namespace interfaces and addresses unchanged: {sorted(links)} {sorted(addrs)}")
    for addr in cluster.addrs + [cluster.driver_addr]:
        routes = subprocess.run(["ip", "-o", "route", "show", "match", addr],
                                capture_output=True, text=True).stdout.splitlines()
        specific = [route for route in routes if not route.startswith("default")]
        via = subprocess.run(["ip", "-o", "route", "get", addr], capture_output=True, text=True)
        route = (via.stdout or via.stderr).split(" uid ")[0].strip()
        check(not specific, f"root namespace has no route to {addr} but the host's default "
              f"[{route}] {specific}")


def test_rate(uncapped, capped):
    """(c) The cap holds node -> node (both tbfs on the path) and driver -> node
    (the bridge port's tbf alone: the driver's link is not capped)."""
    fast = transfer(uncapped, uncapped.nodes[0], uncapped.nodes[1], uncapped.addrs[1], BIG)
    slow = transfer(capped, capped.nodes[0], capped.nodes[1], capped.addrs[1], BIG)
    into = transfer(capped, capped.driver_ns, capped.nodes[1], capped.addrs[1], BIG)
    floor = BIG * 8 / CAP_BITS
    for name, seconds in [("uncapped node0->node1", fast), ("capped node0->node1", slow),
                          ("capped driver->node1", into)]:
        if seconds is not None:
            print(f"  {name}: {BIG} B in {seconds:.3f} s = {BIG * 8 / seconds / 1e6:.1f} Mbit/s "
                  f"(cap {CAP_BITS / 1e6:.0f} Mbit/s, floor at the cap {floor:.2f} s)")
    if None in (fast, slow, into):
        return
    check(slow >= MIN_CAPPED_S, f"capped node0->node1 takes >= {MIN_CAPPED_S} s: {slow:.3f} s")
    check(into >= MIN_CAPPED_S, f"capped driver->node1 takes >= {MIN_CAPPED_S} s: {into:.3f} s")
    check(fast * MIN_SPEEDUP <= slow,
          f"uncapped is >= {MIN_SPEEDUP}x faster: {fast:.3f} s vs {slow:.3f} s")


def test_link_down(cluster):
    """(d) With node 1's link down a connect to it fails within a few seconds;
    after link_up the same server is reachable again."""
    _, port = start_server(cluster, cluster.nodes[1], cluster.addrs[1])
    cluster.link_down(1)
    start = time.monotonic()
    counted, _, output = send(cluster, cluster.nodes[0], cluster.addrs[1], port, 1000,
                              connect_timeout=3)
    elapsed = time.monotonic() - start
    print(f"  connect to a node whose link is down: {output!r} after {elapsed:.2f} s")
    check(counted is None and elapsed < 8,
          f"link_down(1): connect to node 1 fails within 8 s ({elapsed:.2f} s)")
    cluster.link_up(1)
    counted, _, output = send(cluster, cluster.nodes[0], cluster.addrs[1], port, 1000)
    check(counted == 1000, f"link_up(1): node 1 reachable again [{output}]")


def test_signal_cleanup(tag, signum):
    """A process killed by signum while it holds a cluster leaves nothing behind."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); import netns\n"
            f"with netns.Cluster(1, {tag!r}):\n"
            "    print('up', flush=True)\n"
            "    time.sleep(60)\n")
    holder = subprocess.Popen([PYTHON, "-B", "-c", code, HERE], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([holder.stdout], [], [], 20)
    up = bool(ready) and holder.stdout.readline().strip() == "up"
    holder.send_signal(signum)
    try:
        holder.wait(timeout=20)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()
    name = signal.Signals(signum).name
    check(up and not leftovers(tag), f"{name} to a cluster holder (exit {holder.returncode}) "
          f"leaves no namespace: {leftovers(tag)}")


def main():
    netns.require_root()
    root_before = root_view()

    # A crashed run's leftovers: a node namespace with a process in it, and one
    # of a run with more nodes (already there if this test itself crashed).
    for stale in ("sbpfnstu0", "sbpfnstu5"):
        if stale not in netns.list_namespaces():
            subprocess.run(["ip", "netns", "add", stale], check=True)
    squatter = subprocess.Popen(["ip", "netns", "exec", "sbpfnstu0", "sleep", "300"])

    with netns.Cluster(2, "nstu") as uncapped, \
            netns.Cluster(2, "nstc", rate=CAP) as capped:
        print(f"uncapped: {uncapped.nodes} {uncapped.addrs} driver {uncapped.driver_addr}")
        print(f"capped:   {capped.nodes} {capped.addrs} driver {capped.driver_addr}")
        squatter.wait(timeout=5)
        check(squatter.returncode == -signal.SIGKILL and "sbpfnstu5" not in netns.list_namespaces(),
              "a leftover of a crashed run is removed, and its processes killed")
        check(uncapped.subnet != capped.subnet,
              f"distinct subnets: {uncapped.subnet} {capped.subnet}")
        test_reachability(uncapped)
        test_root_isolated(uncapped, root_before)
        test_rate(uncapped, capped)
        test_link_down(uncapped)
        lingering = uncapped.popen(uncapped.nodes[1], ["sleep", "300"])

    # (e)
    check(not leftovers("nstu") and not leftovers("nstc"),
          f"no sbpfnstu*/sbpfnstc* namespace left: {netns.list_namespaces()}")
    check(lingering.returncode == -signal.SIGKILL,
          f"a process still running in a node is killed (exit {lingering.returncode})")
    check(root_view() == root_before, "root namespace unchanged afterwards")
    for signum in (signal.SIGTERM, signal.SIGINT):
        test_signal_cleanup("nsts", signum)

    print("FAIL" if failures else "PASS", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
