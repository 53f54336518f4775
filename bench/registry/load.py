#!/usr/bin/env python3
"""Helpers of bench/registry/run.sh (standard library only).

  load.py register HTTP SERVICES PER_SERVICE THREADS
      registers SERVICES*PER_SERVICE instances (no check) over the HTTP API;
      prints "registered N in S s (R/s)".
  load.py health-timing HTTP DNS BACKEND_CMD... --trials N
      one instance of service `probe` with an HTTP check (interval 200ms,
      fall 1, rise 1) on a demo backend it starts; kills and restarts the
      backend N times and prints, per trial, the ms from the kill to the
      instance leaving DNS, and from the health write (the record's since_ms)
      to DNS.
"""
import http.client
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time


def put(conn, path, body):
    conn.request("PUT", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"PUT {path}: {resp.status} {data[:200]!r}")


def register(http_addr, services, per_service, threads):
    host, port = http_addr.rsplit(":", 1)
    jobs = [(s, i) for s in range(services) for i in range(per_service)]
    random.shuffle(jobs)
    lock = threading.Lock()
    errors = []

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while True:
            with lock:
                if not jobs or errors:
                    return
                s, i = jobs.pop()
            body = {
                "address": f"10.{s // 256}.{s % 256}.{i + 1}",
                "port": 8000 + i,
                "weight": 1 + i,
                "tags": ["even" if i % 2 == 0 else "odd"],
                "meta": {"zone": f"z{i % 3}"},
            }
            try:
                put(conn, f"/v1/services/svc-{s}/instances/i{i}", body)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(e)
                return

    total = len(jobs)
    start = time.time()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    took = time.time() - start
    if errors:
        raise SystemExit(f"registration failed: {errors[0]}")
    print(f"registered {total} in {took:.1f} s ({total / took:.0f}/s)")


def dns_count(sock, addr, name, qid):
    """Number of answer records for an A query of `name`."""
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.strip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    sock.sendto(q, addr)
    while True:
        data = sock.recv(4096)
        if struct.unpack(">H", data[:2])[0] == qid:
            return struct.unpack(">H", data[6:8])[0]


def wait_dns(sock, addr, want, deadline_s=10.0):
    qid = random.randint(0, 65535)
    end = time.time() + deadline_s
    while time.time() < end:
        qid = (qid + 1) % 65536
        try:
            if dns_count(sock, addr, "probe.service.nines", qid) == want:
                return time.time()
        except socket.timeout:
            pass
        time.sleep(0.002)
    raise SystemExit(f"DNS never showed {want} record(s)")


def since_ms(http_addr):
    host, port = http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/v1/services/probe/instances/p1")
    return json.loads(conn.getresponse().read())["since_ms"]


def health_timing(http_addr, dns_addr, backend_cmd, trials):
    dhost, dport = dns_addr.rsplit(":", 1)
    daddr = (dhost, int(dport))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    proc = subprocess.Popen(backend_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    backend = proc.stdout.readline().strip().split(" ", 1)[1]
    bhost, bport = backend.rsplit(":", 1)
    host, port = http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    put(conn, "/v1/services/probe/instances/p1", {
        "address": bhost, "port": int(bport), "check": "http",
        "check_url": f"http://{backend}/health", "interval": "200ms",
        "timeout": "150ms", "rise": 1, "fall": 1,
    })
    wait_dns(sock, daddr, 1)
    down, down_prop, up_prop = [], [], []
    try:
        for _ in range(trials):
            time.sleep(0.5)
            killed = time.time()
            proc.kill()
            proc.wait()
            gone = wait_dns(sock, daddr, 0)
            down.append((gone - killed) * 1000)
            down_prop.append(gone * 1000 - since_ms(http_addr))
            proc = subprocess.Popen(backend_cmd[:-4] + ["--port", bport, "--name", "probe"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            proc.stdout.readline()
            back = wait_dns(sock, daddr, 1)
            up_prop.append(back * 1000 - since_ms(http_addr))
    finally:
        proc.kill()
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"kill -> gone from DNS (interval 200ms, fall 1): median {med(down):.0f} ms, "
          f"min {min(down):.0f}, max {max(down):.0f}")
    print(f"health write -> DNS (critical): median {med(down_prop):.0f} ms, max {max(down_prop):.0f}")
    print(f"health write -> DNS (passing): median {med(up_prop):.0f} ms, max {max(up_prop):.0f}")


def main():
    if sys.argv[1] == "register":
        register(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "health-timing":
        trials = int(sys.argv[sys.argv.index("--trials") + 1])
        cmd = sys.argv[4:sys.argv.index("--trials")]
        health_timing(sys.argv[2], sys.argv[3], cmd, trials)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
