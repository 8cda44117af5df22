#!/usr/bin/python3
"""Runs every test suite of the tree and sums the results.

Suites: format (clang-format), unit (cmocka binaries registered with meson), integration
(pytest against the real daemon), fuzz (libFuzzer, bounded time).  Prints one line per suite
and, last, "N passed, N failed, N skipped".  Exits 1 if anything failed or nothing passed.
Expects ./build to be built (scripts/test does that)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
FUZZ_BUILD = os.path.join(ROOT, "build-fuzz")
SOURCE_DIRS = ["sh4re", "c0re", "ag3nt", "tests"]


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []

    def add(self, suite, passed=0, failed=0, skipped=0, failures=()):
        self.passed += passed
        self.failed += failed
        self.skipped += skipped
        self.failures += [f"{suite}: {f}" for f in failures]
        print(f"== {suite}: {passed} passed, {failed} failed, {skipped} skipped", flush=True)


def run_format(t):
    exe = shutil.which("clang-format")
    if not exe:
        t.add("format", skipped=1)
        return
    files = []
    for d in SOURCE_DIRS:
        for dirpath, _, names in os.walk(os.path.join(ROOT, d)):
            files += [os.path.join(dirpath, n) for n in names if n.endswith((".c", ".h"))]
    p = subprocess.run([exe, "--dry-run", "--Werror", *sorted(files)], capture_output=True,
                       text=True)
    if p.returncode == 0:
        t.add("format", passed=1)
    else:
        print(p.stderr[-4000:])
        t.add("format", failed=1, failures=["clang-format: run clang-format -i on the files above"])


def parse_tap(out):
    passed = failed = skipped = 0
    names = []
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("not ok "):
            failed += 1
            names.append(s[7:])
        elif s.startswith("ok "):
            if "# SKIP" in s:
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped, names


def run_unit(t):
    p = subprocess.run(["meson", "introspect", BUILD, "--tests"], capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr)
        t.add("unit", failed=1, failures=["meson introspect failed"])
        return
    tests = json.loads(p.stdout)
    passed = failed = skipped = 0
    failures = []
    for test in tests:
        env = dict(os.environ)
        env.update(test.get("env") or {})
        env["CMOCKA_MESSAGE_OUTPUT"] = "TAP"
        try:
            r = subprocess.run(test["cmd"], env=env, cwd=test.get("workdir") or BUILD,
                               capture_output=True, text=True, timeout=test.get("timeout") or 120)
            out, code = r.stdout + r.stderr, r.returncode
        except subprocess.TimeoutExpired as e:
            out, code = (e.stdout or b"").decode(errors="replace"), -1
        if code == 77:
            print(f"   {test['name']}: skipped (exit 77)")
            skipped += 1
            continue
        a, b, c, names = parse_tap(out)
        if code != 0 and b == 0:
            b = 1
            names = [f"exit code {code}"]
        if b:
            print(out[-6000:])
        passed, failed, skipped = passed + a, failed + b, skipped + c
        failures += [f"{test['name']}: {n}" for n in names]
        print(f"   {test['name']}: {a} passed, {b} failed, {c} skipped", flush=True)
    t.add("unit", passed, failed, skipped, failures)


def run_integration(t, extra):
    with tempfile.TemporaryDirectory() as d:
        xml = os.path.join(d, "junit.xml")
        env = dict(os.environ)
        env.setdefault("HIVE_C0RE_BIN", os.path.join(BUILD, "c0re", "hive-c0re"))
        cmd = ["/usr/bin/python3", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={xml}", os.path.join(ROOT, "tests", "integration"), *extra]
        p = subprocess.run(cmd, env=env, cwd=ROOT)
        if not os.path.exists(xml):
            t.add("integration", failed=1, failures=[f"pytest exited {p.returncode}"])
            return
        root = ET.parse(xml).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        total = sum(int(s.get("tests", 0)) for s in suites)
        failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
        skipped = sum(int(s.get("skipped", 0)) for s in suites)
        names = [tc.get("classname", "") + "::" + tc.get("name", "")
                 for s in suites for tc in s.iter("testcase")
                 if tc.find("failure") is not None or tc.find("error") is not None]
        if p.returncode not in (0, 1) and failed == 0:
            failed, names = 1, [f"pytest exited {p.returncode}"]
        t.add("integration", total - failed - skipped, failed, skipped, names)


def run_fuzz(t, seconds):
    if seconds <= 0:
        t.add("fuzz", skipped=1)
        return
    if not shutil.which("clang"):
        print("   clang is not installed: the fuzz target cannot be built")
        t.add("fuzz", skipped=1)
        return
    env = dict(os.environ, CC="clang")
    if not os.path.exists(os.path.join(FUZZ_BUILD, "build.ninja")):
        p = subprocess.run(["meson", "setup", FUZZ_BUILD, "-Dfuzzing=true", "-Dtests=disabled"],
                           env=env, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stdout[-3000:], p.stderr[-3000:])
            t.add("fuzz", failed=1, failures=["meson setup of the fuzz build failed"])
            return
    p = subprocess.run(["ninja", "-C", FUZZ_BUILD], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout[-3000:], p.stderr[-3000:])
        t.add("fuzz", failed=1, failures=["the fuzz build failed"])
        return
    fuzz_dir = os.path.join(FUZZ_BUILD, "tests", "fuzz")
    targets = sorted(n for n in os.listdir(fuzz_dir)
                     if n.startswith("fuzz-") and os.path.isfile(os.path.join(fuzz_dir, n)) and
                     os.access(os.path.join(fuzz_dir, n), os.X_OK))
    passed = failed = 0
    failures = []
    for name in targets:
        with tempfile.TemporaryDirectory() as d:
            corpus = os.path.join(d, "corpus")
            own = os.path.join(ROOT, "tests", "fuzz", "corpus-" + name[len("fuzz-"):])
            seeds = own if os.path.isdir(own) else os.path.join(ROOT, "tests", "fuzz", "corpus")
            shutil.copytree(seeds, corpus)
            cmd = [os.path.join(FUZZ_BUILD, "tests", "fuzz", name), f"-max_total_time={seconds}",
                   f"-artifact_prefix={d}/", "-print_final_stats=1", corpus]
            p = subprocess.run(cmd, capture_output=True, text=True)
            stats = [l for l in p.stderr.splitlines() if l.startswith("stat::number_of_executed_units")]
            print(f"   {name}: {seconds} s, exit {p.returncode}, {stats[0] if stats else ''}")
            if p.returncode == 0:
                passed += 1
            else:
                print(p.stderr[-6000:])
                failed += 1
                failures.append(name)
    if not targets:
        failed, failures = 1, ["no fuzz targets were built"]
    t.add("fuzz", passed, failed, 0, failures)


def main():
    ci = bool(os.environ.get("CI"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz-seconds", type=int,
                    default=int(os.environ.get("FUZZ_SECONDS", 60 if ci else 20)),
                    help="how long each fuzz target runs (0 skips fuzzing)")
    ap.add_argument("--suite", action="append",
                    choices=["format", "unit", "integration", "fuzz"],
                    help="run only these suites (repeatable)")
    ap.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    a = ap.parse_args()
    suites = a.suite or ["format", "unit", "integration", "fuzz"]

    t = Tally()
    runners = {
        "format": lambda: run_format(t),
        "unit": lambda: run_unit(t),
        "integration": lambda: run_integration(t, a.pytest_args),
        "fuzz": lambda: run_fuzz(t, a.fuzz_seconds),
    }
    for name in ["format", "unit", "integration", "fuzz"]:
        if name in suites:
            try:
                runners[name]()
            except Exception as e:  # a broken runner is a failure, never a silent pass
                t.add(name, failed=1, failures=[f"the runner itself failed: {e!r}"])

    for f in t.failures:
        print(f"FAILED {f}")
    print(f"{t.passed} passed, {t.failed} failed, {t.skipped} skipped")
    return 1 if t.failed or t.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
