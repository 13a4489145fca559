#!/usr/bin/python3
"""Node daemons in network namespaces (tests/cluster/netns.py): one
`sbpflow-worker --listen` per namespace, the driver in a namespace of its own,
every byte between them crossing veth pairs and a bridge.

    netns_test.py CASE BIN_DIR WORK_DIR

mlp       4 namespaces x 1 rank train the MLP on Fashion-MNIST: the losses equal
          `--local 4` on the same plan bit for bit, and the parameters equal
          the single-rank run up to float summation order.
kill      rank 1 is SIGKILLed mid-step,
stop      rank 1 is SIGSTOPped mid-step,
link      node 1's link goes down mid-step: each time the driver fails within
          10 s naming the worker (or its node), the other ranks are gone within
          10 s, the victim's daemon ends it, and the daemons (node 1's link
          back up) run the next job.

Needs root; skips (exit 77) with the reason without it.
"""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import netns  # noqa: E402

NODES = 4
PORT = 7100
DEADLINE_S = 10.0  # the bound on ending a failed job everywhere


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def wait_for(predicate, timeout, what):
    """Polls predicate every 50 ms; returns its value, or raises naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def children(pid):
    """pids of pid's child processes (a daemon's rank processes)."""
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; only its parent can reap it.
    stat = read(f"/proc/{pid}/stat")
    return bool(stat) and stat[stat.rindex(")") + 2] != "Z"


class Job:
    """A cluster of NODES namespaces with a daemon in each, and a shared secret."""

    def __init__(self, cluster, bin_dir, work):
        self.cluster, self.bin, self.work = cluster, bin_dir, work
        self.secret = os.path.join(work, "secret")
        with open(self.secret, "w") as f:
            f.write(os.urandom(32).hex())
        self.daemons = []
        for i, (ns, addr) in enumerate(zip(cluster.nodes, cluster.addrs)):
            log = open(os.path.join(work, f"node{i}.log"), "w")
            self.daemons.append(cluster.popen(
                ns, [self.tool("sbpflow-worker"), "--listen", f"{addr}:{PORT}",
                     "--secret-file", self.secret], stdout=log, stderr=subprocess.STDOUT))
        for i in range(len(self.daemons)):
            wait_for(lambda: "listening on" in self.node_log(i), 10, f"node {i} to listen")
        self.workers = ",".join(f"{addr}:{PORT}" for addr in cluster.addrs)

    def tool(self, name):
        return os.path.join(self.bin, name)

    def node_log(self, i):
        return read(os.path.join(self.work, f"node{i}.log"))

    def driver_argv(self, plan, *args):
        return [self.tool("sbpflow"), "run", plan, "--workers", self.workers, "--secret-file",
                self.secret, "--host", self.cluster.driver_addr, *args]

    def run_driver(self, plan, log_name, *args):
        """Runs a job to its end; returns the driver's output, raises if it failed."""
        result = self.cluster.run(self.cluster.driver_ns, self.driver_argv(plan, *args),
                                  capture_output=True, text=True, timeout=300)
        with open(os.path.join(self.work, log_name), "w") as f:
            f.write(result.stdout + result.stderr)
        check(result.returncode == 0,
              f"job on the namespaces failed ({log_name}):\n{result.stdout}{result.stderr}")
        return result.stdout


def losses(output):
    return [line.split()[5] for line in output.splitlines() if " loss " in line and "step" in line]


def emit_mlp_plan(bin_dir, ranks, path):
    subprocess.run([os.path.join(bin_dir, "mlp_fashion_mnist"), "--local", str(ranks),
                    "--emit-plan", path, "--plan-only"], check=True, stdout=subprocess.DEVNULL)


def case_mlp(bin_dir, work):
    from gpt_torch import load_checkpoint  # numpy; reads any layout's checkpoint
    import numpy as np

    one, four = os.path.join(work, "one.plan"), os.path.join(work, "four.plan")
    emit_mlp_plan(bin_dir, 1, one)
    emit_mlp_plan(bin_dir, NODES, four)
    common = ["--max-steps", "40", "--log-every", "1", "--seed", "5"]
    sbpflow = os.path.join(bin_dir, "sbpflow")

    def local(plan, ranks, checkpoint):
        result = subprocess.run([sbpflow, "run", plan, "--local", str(ranks), "--checkpoint",
                                 checkpoint, *common], capture_output=True, text=True, check=True)
        return result.stdout

    ref = local(one, 1, os.path.join(work, "ck1"))
    local4 = local(four, NODES, os.path.join(work, "ck-local4"))
    with netns.Cluster(NODES, "mlp") as cluster:
        job = Job(cluster, bin_dir, work)
        nodes = job.run_driver(four, "nodes.log", "--checkpoint", os.path.join(work, "ck-nodes"),
                               *common)
    print(nodes)
    check(len(losses(nodes)) == 40, f"expected 40 progress lines, got {len(losses(nodes))}")
    check(losses(nodes) == losses(local4), "4 namespaces differ from --local 4 on the same plan")
    accuracy = [line for line in nodes.splitlines() if "test accuracy" in line]
    check(accuracy and accuracy == [line for line in ref.splitlines() if "test accuracy" in line],
          f"test accuracy differs from one rank: {accuracy}")

    single, spread = load_checkpoint(os.path.join(work, "ck1")), load_checkpoint(
        os.path.join(work, "ck-nodes"))
    check(sorted(single) == sorted(spread), "the checkpoints hold different tensors")
    for name in sorted(single):
        a = np.asarray(single[name], dtype=np.float64)
        b = np.asarray(spread[name], dtype=np.float64)
        diff = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30)
        print(f"{name}: relative difference to one rank {diff:.3g}")
        # Four partial sums of the gradient instead of one: float summation
        # order, nothing more (a wrong shard or a missed reduction is O(1)).
        check(diff < 1e-5, f"{name} differs from the single-rank run by {diff:.3g}")


def case_failure(bin_dir, work, how):
    plan = os.path.join(work, "four.plan")
    emit_mlp_plan(bin_dir, NODES, plan)
    victim_node = 1
    with netns.Cluster(NODES, how) as cluster:
        job = Job(cluster, bin_dir, work)
        driver_log = os.path.join(work, "driver.log")
        with open(driver_log, "w") as out:
            driver = cluster.popen(cluster.driver_ns,
                                   job.driver_argv(plan, "--epochs", "100000", "--log-every", "1"),
                                   stdout=out, stderr=subprocess.STDOUT)
        ranks = wait_for(lambda: [children(d.pid) for d in job.daemons]
                         if all(children(d.pid) for d in job.daemons) else None,
                         20, "every node to start its rank")
        ranks = [pid for pids in ranks for pid in pids]
        wait_for(lambda: re.search(r"step ([3-9]|\d\d+)/", read(driver_log)), 30,
                 "the job to pass step 3")
        victim = children(job.daemons[victim_node].pid)[0]
        start = time.monotonic()
        if how == "kill":
            os.kill(victim, 9)
        elif how == "stop":
            os.kill(victim, 19)
        else:
            cluster.link_down(victim_node)

        wait_for(lambda: driver.poll() is not None, DEADLINE_S + 5, "the driver to end")
        driver_s = time.monotonic() - start
        survivors = [p for p in ranks if p != victim]
        wait_for(lambda: not any(alive(p) for p in survivors), DEADLINE_S + 5,
                 "the surviving rank processes to end")
        survivors_s = time.monotonic() - start
        # The victim too (frozen or cut off, its daemon must end it), but its
        # daemon first gives it a grace period to exit on its own.
        wait_for(lambda: not alive(victim), DEADLINE_S + 5, f"the victim (pid {victim}) to end")
        output = read(driver_log)
        print(output[-600:])
        print(f"{how}: the driver ended {driver_s:.2f} s after the fault, the other ranks "
              f"{survivors_s:.2f} s after it, the victim {time.monotonic() - start:.2f} s after it")
        check(driver.returncode != 0, "the driver exited 0 after a fault")
        addr = re.escape(cluster.addrs[victim_node])
        named = (rf"^error: worker {victim_node} \(pid {victim}, {addr}:\d+\) lost during step \d+"
                 rf"|^error: node {addr}:{PORT} lost")
        check(re.search(named, output, re.M), f"no error naming worker {victim_node}")
        check(driver_s <= DEADLINE_S, f"the driver took {driver_s:.2f} s to end the job")
        check(survivors_s <= DEADLINE_S,
              f"surviving rank processes lived {survivors_s:.2f} s after the fault")

        if how == "link":
            cluster.link_up(victim_node)
        for i, daemon in enumerate(job.daemons):
            check(daemon.poll() is None, f"node {i}'s daemon died with the job:\n{job.node_log(i)}")
        job.run_driver(plan, "next.log", "--max-steps", "3")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    name, bin_dir, work = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    netns.require_root()
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    try:
        if name == "mlp":
            case_mlp(bin_dir, work)
        elif name in ("kill", "stop", "link"):
            case_failure(bin_dir, work, name)
        else:
            sys.exit(f"unknown case {name!r}\n{__doc__}")
    except Failure as failure:
        for log in sorted(os.listdir(work)):
            if log.endswith(".log"):
                print(f"== {log}\n{read(os.path.join(work, log))}")
        print(f"FAIL: {failure}")
        return 1
    print(f"PASS: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
