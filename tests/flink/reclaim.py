#!/usr/bin/env python3
"""Three ways through one spot reclaim, on a real Flink, one version per run.

Each way gets a fresh session cluster (cluster.sh): 1 JobManager, 3
TaskManagers of 2 slots ("pods" tm-1 on the reclaimed node spot-node, tm-2
and tm-3 on other nodes), ContinuityJob at parallelism 6 (source 2),
checkpoints every 60 s. Once the first checkpoint has completed, the spot
notice comes (T_notice) with a lead time of --lead seconds (40 s instead of
AWS's 120 s, to keep runs short); at the deadline (T_deadline) the instance
dies: every process still on the node gets SIGSTOP (a vanished EC2 instance
answers nothing, so the JobManager learns only by heartbeat timeout), then
SIGKILL once the JobManager has dropped it (or after 60 s). A replacement
TaskManager (tm-4, "another node") starts --replacement seconds after the
deadline.

  none   no agent: nothing happens before the deadline
  drain  a plain drain at the notice, as a generic termination handler does:
         the node's TaskManagers get SIGTERM (a graceful eviction), no Flink calls
  spotd  the real spotd binary against imds-sim (the notice) and k8s-sim acting
         as the kubelet (--pod-pidfile: an accepted eviction SIGTERMs that
         TaskManager, the pod is gone when it exits), with the JobManager's
         real REST URL (pod annotation spotd.io/flink-rest-url; its host is
         127.0.0.1, not in the pods' namespace, so spotd matches TaskManagers
         to pods by IP: each TaskManager binds to its own loopback address,
         127.0.1.N, which k8s-sim serves as the pod's IP); the pods'
         terminationGracePeriodSeconds is --pod-grace (default 10 s, as the
         first runs had it: spotd then gave the Flink steps until deadline -
         15 s margin - grace, so at a 40 s lead the Kubernetes default of
         30 s left them no time; spotd now keeps --tm-stop-time, 10 s, at
         most the grace, and the test command runs with 30 s)

Per way: restarts (the JobManager's "Restoring job ... from Checkpoint"
lines from the notice on; in brackets the failure restarts, new entries of
the job's exception history; in square brackets the job metric numRestarts
after minus before, which lags and on 1.20 missed a heartbeat-timeout
restart), the longest time without output and without new output, the
longest delay of a record after it was due (a stall of some keys only shows
there), seconds of input replayed per restart, records lost
(check_sink.py), seconds from the replacement's registration until the job
runs at parallelism 6 again (held 20 s), whether the job was ever FAILED.

  reclaim.py VERSION [--ways none,drain,spotd] [--dir DIR] [--build BUILD_DIR]
             [--lead 40] [--replacement 20] [--pod-grace 10] [--report] [--check]

--check (the test command's tests/flink/run.sh) exits 1 unless every way
ran, no record was lost, the job never went FAILED, and spotd's run shows
one restart before the replacement registered, at most two in all, and the
job back at full parallelism; it prints one "real-flink:" line per way.

BUILD_DIR (default build/ of the repository) holds agent/spotd and
tests/sim/{imds-sim,k8s-sim}. Flink defaults everywhere (heartbeat interval
10 s, timeout 50 s; restart strategy: 1.x fixed-delay 1 s, 2.x
exponential-delay; adaptive-scheduler cooldowns and stabilization timeouts).
Only one cluster runs at a time; every process started is stopped.
"""
import argparse
import calendar
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import check_sink  # noqa: E402

CLUSTER = os.path.join(HERE, "cluster.sh")
NODE = "spot-node"
NS = "flink"
APP = "continuity"
FULL = 6


RATE = 2000  # records/s of ContinuityJob's source

def log(msg):
    print(time.strftime("%H:%M:%S") + f" {msg}", flush=True)


def iso(t):
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def sh(*args, **kw):
    return subprocess.run([CLUSTER, *args], check=True, capture_output=True, text=True, **kw).stdout.strip()


def get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


class Poller(threading.Thread):
    """Every 0.5 s: job state, vertex parallelisms, TaskManagers, numRestarts."""

    def __init__(self, url, jid):
        super().__init__(daemon=True)
        self.url, self.jid = url, jid
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.time()
            try:
                j = get(f"{self.url}/jobs/{self.jid}")
                tms = sorted(x["id"] for x in get(f"{self.url}/taskmanagers")["taskmanagers"])
                m = get(f"{self.url}/jobs/{self.jid}/metrics?get=numRestarts")
                nr = int(float(m[0]["value"])) if m else None
                pars = [v["parallelism"] for v in j["vertices"]]
                running = all(v.get("status") == "RUNNING" for v in j["vertices"])
                self.samples.append((t, j["state"], pars, tms, nr, running))
            except Exception as e:  # the JobManager may be busy: a missed sample
                self.samples.append((t, "?", [], [], None, False, str(e)))
            self.stop.wait(0.5)

    def restarts(self):
        vals = [s[4] for s in self.samples if len(s) == 6 and s[4] is not None]
        return max(vals) if vals else None


def pid_of(d, name):
    try:
        with open(os.path.join(d, "pids", name)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wait_for(pred, timeout, step=0.5):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def run_way(way, a, root):
    d = os.path.join(root, way)
    procs = []
    res = {"way": way}
    poller = None
    try:
        log(f"[{way}] starting Flink {a.version} in {d}")
        t_start = time.time()
        url = sh("start", a.version, d, "3")
        res["cluster_up_s"] = round(time.time() - t_start, 1)
        jid = sh("submit", d, "--parallelism", str(FULL), "--checkpoint-ms", "60000")
        log(f"[{way}] {url} job {jid}; waiting for the first periodic checkpoint")
        poller = Poller(url, jid)
        poller.start()
        if not wait_for(lambda: get(f"{url}/jobs/{jid}/checkpoints")["counts"]["completed"] >= 1, 150, 1):
            raise RuntimeError("no checkpoint completed")
        if not wait_for(lambda: poller.samples and poller.samples[-1][1] == "RUNNING"
                        and poller.samples[-1][2] and max(poller.samples[-1][2]) == FULL, 30):
            raise RuntimeError("job not at full parallelism")

        notice_in = 8.0
        spotd_log = os.path.join(d, "log", "spotd.log")
        if way == "spotd":
            imds = subprocess.Popen([os.path.join(a.build, "tests/sim/imds-sim"), "--spot", "terminate",
                                     "--spot-after-ms", str(int(notice_in * 1000)), "--spot-lead-s", str(a.lead)],
                                    stdout=subprocess.PIPE, text=True)
            procs.append(imds)
            t_sim = time.time()
            imds_url = imds.stdout.readline().split()[-1]
            kargs = [os.path.join(a.build, "tests/sim/k8s-sim"), "--grace-ms-per-s", "1000",
                     "--node", f"{NODE}:kubernetes.io/hostname={NODE},karpenter.sh/capacity-type=spot",
                     "--node", "node-b", "--node", "node-c"]
            labels = f"app={APP},component=taskmanager,type=flink-native-kubernetes"
            for tm, node in (("tm-1", NODE), ("tm-2", "node-b"), ("tm-3", "node-c")):
                kargs += ["--pod", f"{NS}/{tm}:{node}:{labels}:{a.pod_grace}:ReplicaSet",
                          "--pod-annotation", f"{NS}/{tm}=spotd.io/flink-rest-url={url}",
                          "--pod-ip", f"{NS}/{tm}=127.0.1.{tm[3:]}",
                          "--pod-pidfile", f"{NS}/{tm}={os.path.join(d, 'pids', tm)}"]
            kubelog = open(os.path.join(d, "log", "k8s-sim.log"), "w")
            k8s = subprocess.Popen(kargs, stdout=subprocess.PIPE, stderr=kubelog, text=True)
            procs.append(k8s)
            line = k8s.stdout.readline().split()
            kube_url, ca, tok = line[2], line[3].split("=", 1)[1], line[4].split("=", 1)[1]
            with open(spotd_log, "w") as sl:
                sp = subprocess.Popen([os.path.join(a.build, "agent/spotd"), "run", f"--node-name={NODE}",
                                       f"--imds-endpoint={imds_url}", f"--kube-api={kube_url}",
                                       f"--kube-ca-file={ca}", f"--kube-token-file={tok}",
                                       "--health-addr=127.0.0.1:0", "--log-target=stderr", "--log-format=json",
                                       "--flink-url-allow=127.0.0.1"], stdout=sl, stderr=sl)
            procs.append(sp)
            t_notice = t_sim + notice_in
            time.sleep(max(0, t_notice + 0.5 - time.time()))
            # the notice's own time is the deadline
            with urllib.request.urlopen(imds_url + "/latest/meta-data/spot/instance-action", timeout=3) as r:
                notice = json.loads(r.read())
            t_deadline = calendar.timegm(time.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ"))
        else:
            t_notice = time.time() + notice_in
            t_deadline = t_notice + a.lead
        time.sleep(max(0, t_notice - time.time()))
        r0 = poller.restarts()
        exc0 = len(get(f"{url}/jobs/{jid}/exceptions").get("exceptionHistory", {}).get("entries", []))
        log(f"[{way}] notice at {iso(t_notice)}Z, deadline {iso(t_deadline)}Z; numRestarts before: {r0}")
        if way == "drain":
            pid = pid_of(d, "tm-1")
            os.kill(pid, signal.SIGTERM)
            log(f"[{way}] SIGTERM tm-1 (pid {pid}) at {iso(time.time())}Z")

        # The instance dies at the deadline.
        time.sleep(max(0, t_deadline - time.time()))
        doomed = [n for n in ("tm-1",) if pid_of(d, n) and alive(pid_of(d, n))]
        for n in doomed:
            os.kill(pid_of(d, n), signal.SIGSTOP)
        log(f"[{way}] deadline: SIGSTOP {doomed or 'nothing (no process left on the node)'}")
        res["alive_at_deadline"] = doomed

        t_repl = t_deadline + a.replacement
        # SIGKILL the stopped ones once the JobManager dropped them (or after 60 s),
        # and start the replacement on time meanwhile.
        killed = not doomed
        repl_started = False
        while not (killed and repl_started):
            now = time.time()
            if not killed:
                s = poller.samples[-1]
                if (len(s) == 6 and not any(n in s[3] for n in doomed)) or now - t_deadline >= 60:
                    for n in doomed:
                        os.kill(pid_of(d, n), signal.SIGKILL)
                    killed = True
                    log(f"[{way}] SIGKILL {doomed} ({now - t_deadline:.1f} s after the deadline)")
            if not repl_started and now >= t_repl:
                sh("add-tm", d, "tm-4", "127.0.1.4")
                repl_started = True
                log(f"[{way}] replacement tm-4 started")
            time.sleep(0.2)
        t_reg = wait_for(lambda: next((s[0] for s in poller.samples if len(s) == 6 and "tm-4" in s[3]), None), 90)
        log(f"[{way}] tm-4 registered at {iso(t_reg) if t_reg else '-'}Z; waiting for parallelism {FULL}")

        def full_since():
            """Start of the final stretch at full parallelism, all tasks running
            (a job still at 6 on a frozen TaskManager is not back: it restarts later)."""
            since = None
            for s in poller.samples:
                if len(s) != 6:
                    continue
                ok = s[1] == "RUNNING" and s[2] and max(s[2]) == FULL and s[5] and not any(n in s[3] for n in doomed)
                since = (since or s[0]) if ok else None
            return since if since and t_reg and since >= t_reg - 1 and time.time() - since >= 20 else None
        # full parallelism held for 20 s (late restarts, metric lag) or 240 s in all
        t_full = wait_for(full_since, 240, 1)
        poller.stop.set()
        poller.join()

        ex = get(f"{url}/jobs/{jid}/exceptions").get("exceptionHistory", {}).get("entries", [])
        r1 = poller.restarts()
        res["restarts"] = (r1 - r0) if r0 is not None and r1 is not None else None
        res["failure_restarts"] = len(ex) - exc0
        res["failures"] = [f"{iso(e['timestamp'] / 1000)}Z {e.get('exceptionName', '')}: "
                           f"{(e.get('stacktrace') or '').splitlines()[0][:160] if e.get('stacktrace') else ''}"
                           for e in ex[exc0:]] if ex else []
        res["ever_failed"] = any(s[1] == "FAILED" for s in poller.samples)
        res["full_after_registration_s"] = round(t_full - t_reg, 1) if t_full and t_reg else None
        res["t_notice"], res["t_deadline"], res["t_registered"], res["t_full"] = t_notice, t_deadline, t_reg, t_full
        sink_figures(res, d)
        # job states and parallelism as polled, changes only
        tl, last = [], None
        for s in poller.samples:
            if len(s) != 6:
                continue
            key = (s[1], tuple(s[2]), tuple(s[3]))
            if key != last:
                tl.append(f"{iso(s[0])}Z {s[1]:<12} par {s[2]} tms {s[3]} numRestarts {s[4]}")
                last = key
        res["polled"] = tl
        with open(os.path.join(d, "timeline.txt"), "w") as f:
            f.write("\n".join(timeline(d, t_notice - 3, time.time())) + "\n")
            f.write("\npolled:\n" + "\n".join(tl) + "\n")
        with open(os.path.join(d, "result.json"), "w") as f:
            json.dump(res, f, indent=1)
        return res
    finally:
        if poller:
            poller.stop.set()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run([CLUSTER, "stop", d], check=False)


def log_time(line):
    """The UTC time at the start of a log line (the JobManager's
    "2026-12-06T22:56:26,272Z ..." or spotd's "...26.272Z"), or None."""
    try:
        return calendar.timegm(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) + int(line[20:23]) / 1000
    except ValueError:
        return None


def sink_figures(res, d):
    """What the sink shows from 2 s before the notice on; replays split into
    those of the reclaim (before the replacement registered) and those of the
    regrowth."""
    t_notice, t_reg = res["t_notice"], res["t_registered"] or time.time()
    # The JobManager's own time of tm-4's registration: the poll that set
    # t_registered sees it up to a poll interval later, and a regrowth that
    # restarts within that interval would count as the reclaim's.
    jm_log = os.path.join(d, "log", "jobmanager.log")
    for line in open(jm_log, errors="replace"):
        if "Registering TaskManager with ResourceID tm-4" in line:
            t = log_time(line)
            if t is not None and t < t_reg:
                t_reg = t
            break
    sink = check_sink.analyze(os.path.join(d, "out"), int((t_notice - 2) * 1000))
    recs = sink["_recs"]
    res["lost"] = sink["lost"]
    res["not_yet_replayed"] = sink["not_yet_replayed"]
    res["replayed"] = sink["replayed_in_window"]
    res["replayed_reclaim"] = check_sink.replays(recs, int((t_notice - 2) * 1000), int(t_reg * 1000))
    res["replayed_regrowth"] = check_sink.replays(recs, int(t_reg * 1000), 1 << 62)
    # re-emissions in bursts (one per restart from a checkpoint), records each
    ts, seen = [], set()
    for t, seq, *_ in recs:
        if seq in seen:
            if t >= (t_notice - 2) * 1000:
                ts.append(t)
        else:
            seen.add(seq)
    bursts = []
    for i, t in enumerate(ts):
        if i == 0 or t - ts[i - 1] > 5000:
            bursts.append(0)
        bursts[-1] += 1
    res["replay_bursts"] = bursts
    # restarts as the JobManager logs them: each start of the job from a checkpoint
    n = before = 0
    for line in open(jm_log, errors="replace"):
        if "Restoring job" in line:
            t = log_time(line)
            if t is None:
                continue
            if t >= t_notice - 1:
                n += 1
                before += t < t_reg
    res["restores"] = n
    res["restores_reclaim"] = before  # the downscale's, before the replacement registered
    res["longest_gap_s"] = round(sink["longest_gap_ms"] / 1000, 1)
    res["longest_gap_new_s"] = round(sink["longest_gap_new_ms"] / 1000, 1)
    res["max_delay_s"] = round(sink["max_delay_ms"] / 1000, 1)


JM_PATTERNS = re.compile(r"switched from state|Completed checkpoint|Triggering checkpoint|Restoring job|"
                         r"Transition from state|Closing TaskExecutor connection|Registering TaskManager|"
                         r"[Rr]equirements|Disconnect|[Hh]eartbeat of TaskManager|[Rr]escal|[Dd]esired resources|"
                         r"Cannot restart|restart strategy|cooldown|stabiliz")


def timeline(d, t_from, t_to):
    """spotd's log, the kubelet's (k8s-sim) and the JobManager's lines that
    tell the order of things, merged by time (UTC)."""
    ev = []

    def add(ts, who, msg):
        t = log_time(ts)
        if t is not None and t_from <= t <= t_to:
            ev.append((t, who, msg.strip()))
    try:
        for line in open(os.path.join(d, "log", "spotd.log")):
            try:
                j = json.loads(line)
                add(j["ts"], "spotd", j["msg"])
            except (ValueError, KeyError):
                pass
    except OSError:
        pass
    try:
        for line in open(os.path.join(d, "log", "k8s-sim.log")):
            add(line[:24], "kubelet", line[24:].replace("k8s-sim: kubelet:", ""))
    except OSError:
        pass
    for line in open(os.path.join(d, "log", "jobmanager.log"), errors="replace"):
        if JM_PATTERNS.search(line):
            msg = line[25:]
            msg = msg.split(" - ", 1)[1] if " - " in msg else msg
            add(line[:24], "JM", msg[:300])
    ev.sort()
    return [f"{iso(t)}Z {who:<7} {m}" for t, who, m in ev]


def table(version, results):
    rows = [("way", "restarts (failure) [numRestarts]", "longest gap s (new output)", "max delay s",
             "replayed per restart, s of input", "lost", "full par. s after replacement", "ever FAILED")]
    for r in results:
        if "error" in r:
            rows.append((r["way"], "error: " + r["error"], "", "", "", "", ""))
            continue
        rows.append((r["way"], f"{r['restores']} ({r['failure_restarts']}) [{r['restarts']}]",
                     f"{r['longest_gap_s']} ({r['longest_gap_new_s']})", str(r["max_delay_s"]),
                     " + ".join(f"{b / 2000:.1f}" for b in r["replay_bursts"]) or "0", str(r["lost"]),
                     str(r["full_after_registration_s"]), "yes" if r["ever_failed"] else "no"))
    w = [max(len(str(x[i])) for x in rows) for i in range(len(rows[0]))]
    out = [f"Flink {version}"]
    for i, x in enumerate(rows):
        out.append("| " + " | ".join(str(c).ljust(w[j]) for j, c in enumerate(x)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (n + 2) for n in w) + "|")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version")
    ap.add_argument("--ways", default="none,drain,spotd")
    ap.add_argument("--report", action="store_true",
                    help="no new runs: the table again from DIR/WAY/result.json and the sink files")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--lead", type=int, default=40)
    ap.add_argument("--replacement", type=int, default=20)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every way ran and spotd's run shows what spotd promises: no record "
                         "lost, never FAILED, one restart for the downscale, at most one more to grow back, "
                         "back at full parallelism (the times are printed, not judged)")
    ap.add_argument("--pod-grace", type=int, default=10,
                    help="terminationGracePeriodSeconds of the TaskManager pods (spotd keeps at most "
                         "--tm-stop-time, 10 s, of it before the eviction margin)")
    a = ap.parse_args()
    root = os.path.abspath(a.dir or f"/tmp/spotd-reclaim-{a.version}")
    os.makedirs(root, exist_ok=True)
    if a.report:
        results = []
        for way in a.ways.split(","):
            with open(os.path.join(root, way, "result.json")) as f:
                r = json.load(f)
            sink_figures(r, os.path.join(root, way))
            results.append(r)
        print(table(a.version, results))
        return check(a.version, results) if a.check else 0
    subprocess.run([CLUSTER, "build", a.version], check=True)
    results = []
    for way in a.ways.split(","):
        try:
            results.append(run_way(way, a, root))
        except Exception as e:  # one way failing does not hide the others
            log(f"[{way}] error: {e}")
            results.append({"way": way, "error": str(e)[:80]})
    print()
    print(table(a.version, results))
    for r in results:
        if "failures" in r and r["failures"]:
            print(f"{r['way']} failures: " + "; ".join(r["failures"]))
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if a.check:
        return check(a.version, results)
    return 0 if all("error" not in r and r["lost"] == 0 for r in results) else 1


def check(version, results):
    """spotd's promise on a real Flink, as counts (a noisy machine decides
    the times: they are printed). 0 when it holds, 1 when not."""
    bad = []
    for r in results:
        if "error" in r:
            bad.append(f"{r['way']}: did not run: {r['error']}")
            continue
        if r["lost"]:
            bad.append(f"{r['way']}: {r['lost']} records lost")
        if r["ever_failed"]:
            bad.append(f"{r['way']}: the job went FAILED")
        if r["way"] != "spotd":
            continue
        if r["restores_reclaim"] != 1:
            bad.append(f"spotd: {r['restores_reclaim']} restarts before the replacement registered, not 1")
        if r["restores"] > 2:
            bad.append(f"spotd: {r['restores']} restarts in all, more than one to grow back")
        if not r.get("t_full"):
            bad.append("spotd: never back at full parallelism after the replacement registered")
    for r in results:
        if "error" not in r:
            print(f"real-flink: {version} {r['way']}: restarts {r['restores']} ({r['failure_restarts']} failure), "
                  f"{r['restores_reclaim']} before the replacement; longest gap {r['longest_gap_s']} s; replayed "
                  f"{r['replayed_reclaim'] / RATE:.1f} s + {r['replayed_regrowth'] / RATE:.1f} s of input; lost "
                  f"{r['lost']}; full parallelism {r['full_after_registration_s']} s after the replacement")
    for b in bad:
        print(f"real-flink: {version} FAILED: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
