"""Lazy zstd:chunked mounts from a hostile or flaky registry (issue 13).

One image (files of random bytes the test wrote, converted by skopeo with
`--dest-compress-format zstd:chunked`) is pushed once by skopeo to
Debian's docker-registry with token auth (conftest's token server,
RS256 JWTs), behind conftest's fault-injecting proxy. Each test mounts it
lazily (no prefetch) into a fresh store and reads files: the answer is
the bytes the test wrote. The proxy changes a Range answer's bytes, cuts
it, ignores Range, redirects to another host and holds requests to count
how many are in flight; the registry restarts with a rotated token key.
A registry that goes away and returns is in test_lazy.py
(test_lazy_from_registry)."""
import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import (STRATA, STRATAFS, BlobServer, Procs, Proxy, Servers,
                      TokenServer, as_uid, assert_same_as_umoci, run,
                      serving_pid, sha256s_as, start_registry, token_signer,
                      unmount)
from test_lazy import daemon, filled, lazy_dirs  # noqa: F401 (daemon)

CREDS = ("bob", "t0ken")
NAMES = [f"f{i}" for i in range(6)]


def files_steps(contents):
    def step(root):
        (root / "data").mkdir()
        for name, data in contents.items():
            (root / "data" / name).write_bytes(data)
    return step


@pytest.fixture(scope="module")
def lreg(tmp_path_factory):
    """The image pushed once: .contents (name -> bytes under /data),
    .orig (the layout umoci made, before skopeo's conversion),
    .reg (conftest Registry, token auth), .tok (TokenServer), .px (Proxy
    in front of the registry), .layout (the zstd:chunked layout), .layer
    (its layer digest), .bundle (the certificate file the registry
    trusts)."""
    tmp = tmp_path_factory.mktemp("lreg")
    rnd = random.Random(13)
    contents = {n: rnd.randbytes(20000 + 1000 * i)
                for i, n in enumerate(NAMES)}
    contents["big"] = rnd.randbytes(3 << 20)
    layout, bundle = tmp / "img", tmp / "bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:t"])
    run(["umoci", "unpack", "--image", f"{layout}:t", bundle])
    files_steps(contents)(bundle / "rootfs")
    run(["umoci", "repack", "--image", f"{layout}:t", bundle])
    shutil.rmtree(bundle)
    dst = tmp / "chunked"
    run(["skopeo", "copy", "-q", "--dest-compress-format", "zstd:chunked",
         f"oci:{layout}:t", f"oci:{dst}:t"])
    index = json.loads((dst / "index.json").read_text())
    man = json.loads((dst / "blobs/sha256" / index["manifests"][0][
        "digest"].split(":")[1]).read_text())
    assert len(man["layers"]) == 1
    procs, servers = Procs(), Servers()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    try:
        key, cert, der = token_signer(tmp / "tok")
        trusted = tmp / "tok/trusted.pem"
        shutil.copy(cert, trusted)
        tok = servers.add(TokenServer(key, der, "strata-test", CREDS))
        realm = f"http://127.0.0.1:{tok.server_address[1]}/token"
        reg = start_registry(tmp / "registry", procs,
                             "auth:\n  token:\n"
                             f"    realm: {realm}\n"
                             "    service: strata-test\n"
                             "    issuer: strata-test-issuer\n"
                             f"    rootcertbundle: {trusted}\n")
        policy = tmp / "policy.json"
        policy.write_text(json.dumps(
            {"default": [{"type": "insecureAcceptAnything"}]}))
        run(["skopeo", "--policy", policy, "copy", "-q",
             "--dest-tls-verify=false", "--dest-creds", ":".join(CREDS),
             f"oci:{dst}:t", f"docker://{reg.addr}/l/z:t"], env=env)
        px = servers.add(Proxy(("127.0.0.1", reg.port)))
        px.forward_auth = True
        yield SimpleNamespace(contents=contents, reg=reg, tok=tok, px=px,
                              layout=dst, layer=man["layers"][0]["digest"],
                              trusted=trusted, tmp=tmp, orig=layout)
    finally:
        servers.stop_all()
        procs.stop_all()


@pytest.fixture(autouse=True)
def clean(lreg, monkeypatch):
    """No proxy from the environment; the proxy without faults, passing
    requests; one retry after a second (not 1+2+4+8 s) for a read that
    fails."""
    for v in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "ALL_PROXY", "REGISTRY_AUTH_FILE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("STRATA_REGISTRY_RETRIES", "1")
    px = lreg.px
    px.faults.clear()
    px.log.clear()
    px.statuses.clear()
    tok = lreg.tok
    tok.expires_in, tok.valid_for, tok.leeway, tok.down = 300, None, 0, False
    px.hold.set()
    px.max_inflight = 0
    px.other = None
    yield
    px.hold.set()


def mount_proxied(lreg, daemon, mnt, opts=""):
    """stratafs docker://PROXY/l/z:t on @mnt, no prefetch, in the store
    of $STRATA_ROOT."""
    addr = f"127.0.0.1:{lreg.px.server_address[1]}"
    p = daemon.start(f"docker://{addr}/l/z:t", mnt,
                     opts="prefetch=0,tls_verify=false,creds="
                     + ":".join(CREDS) + (opts and "," + opts))
    lreg.px.log.clear()
    return p, mnt


def blob_get(lreg):
    return lambda path, n: path.endswith("/blobs/" + lreg.layer)


def range_gets(lreg):
    return [h.get("Range") for p, h in lreg.px.log
            if p.endswith("/blobs/" + lreg.layer)]


def nothing_kept(store):
    """No content file in the lazy cache and nothing in tmp/: what a
    failed fill must leave."""
    lazy = Path(store) / "layers/lazy"
    kept = [p for p in lazy.glob("*/data/*")] + \
        [p for p in lazy.glob("content/*")]
    tmp = Path(store) / "tmp"
    kept += [p for p in tmp.rglob("*")] if tmp.exists() else []
    return kept == [], kept


def read_eio(path):
    """A read of @path fails with EIO. (The kernel reads a page again
    when its readahead failed: a fault must last for a few requests.)"""
    with pytest.raises(OSError) as e:
        path.read_bytes()
    assert e.value.errno == 5, e.value


def test_wrong_chunk_is_eio_never_kept(lreg, daemon, store, tmp_path):
    """A Range answer with one byte changed: EIO, a log line naming
    image, layer and file, nothing kept; the next read, answered right,
    gives the file's bytes."""
    p, mnt = mount_proxied(lreg, daemon, tmp_path / "m")
    lreg.px.faults += [(blob_get(lreg), "flip")] * 8
    read_eio(mnt / "data/f0")
    lreg.px.faults.clear()
    log = daemon.log(p)
    assert f"/l/z:t: layer {lreg.layer}: file data/f0: content does not " \
        "match the table of contents: not served (EIO)" in log, log
    assert nothing_kept(store)[0], nothing_kept(store)[1]
    assert (mnt / "data/f0").read_bytes() == lreg.contents["f0"]
    assert len(set(range_gets(lreg))) == 1 and all(range_gets(lreg))
    assert filled(store) == 1


def test_cut_range_retried_then_eio(lreg, daemon, store, tmp_path):
    """A connection cut in the middle of a Range answer is retried (once
    here: STRATA_REGISTRY_RETRIES=1) with the same range; when every
    attempt is cut, EIO and a log line, and no partial content file."""
    p, mnt = mount_proxied(lreg, daemon, tmp_path / "m")
    lreg.px.faults.append((blob_get(lreg), "cut"))
    assert (mnt / "data/f1").read_bytes() == lreg.contents["f1"]
    gets = range_gets(lreg)
    assert len(gets) == 2 and gets[0] == gets[1] and gets[0], gets
    assert "retrying" in daemon.log(p)

    lreg.px.log.clear()
    lreg.px.faults += [(blob_get(lreg), "cut")] * 8
    read_eio(mnt / "data/f2")
    lreg.px.faults.clear()
    gets = range_gets(lreg)
    assert len(gets) >= 2 and len(set(gets)) == 1, gets
    assert f"layer {lreg.layer}: file data/f2: cannot fetch its content" \
        in daemon.log(p)
    assert filled(store) == 1
    assert not (Path(store) / "tmp").exists() or \
        not list((Path(store) / "tmp").rglob("*"))
    assert (mnt / "data/f2").read_bytes() == lreg.contents["f2"]


def test_range_ignored(lreg, daemon, store, tmp_path, monkeypatch):
    """A server that answers a Range request with 200 and the whole blob
    (a CDN ignoring Range): a read fails clearly (EIO, a log line saying
    so) instead of reading the blob up to the range; at mount time the
    layer is pulled in full instead, and the mount is right."""
    p, mnt = mount_proxied(lreg, daemon, tmp_path / "m")
    lreg.px.faults += [(blob_get(lreg), "no-range")] * 8
    read_eio(mnt / "data/f3")
    lreg.px.faults.clear()
    log = daemon.log(p)
    assert "ignores Range requests (HTTP 200 with the whole blob)" in log
    assert "file data/f3: cannot fetch its content" in log
    assert (mnt / "data/f3").read_bytes() == lreg.contents["f3"]

    # the table of contents read at mount time: the layer is pulled in
    # full instead
    lreg.px.faults.append((blob_get(lreg), "no-range"))
    store2 = tmp_path / "store2"
    monkeypatch.setenv("STRATA_ROOT", str(store2))
    p, mnt = mount_proxied(lreg, daemon, tmp_path / "m2")
    assert "ignores Range requests" in daemon.log(p)
    assert (store2 / "images/blobs/sha256" / lreg.layer.split(":")[1]
            ).is_file()
    assert filled(store2) == 0
    assert (mnt / "data/big").read_bytes() == lreg.contents["big"]


def test_redirect_keeps_range_drops_token(lreg, daemon, store, tmp_path):
    """A blob redirected to another host (storage): the Range goes with
    it, the Bearer token does not."""
    other = Servers()
    try:
        blobs = other.add(BlobServer(lreg.layout))
        lreg.px.other = f"http://localhost:{blobs.server_address[1]}"
        p, mnt = mount_proxied(lreg, daemon, tmp_path / "m")
        lreg.px.faults.append((blob_get(lreg), "redirect"))
        assert (mnt / "data/f4").read_bytes() == lreg.contents["f4"]
        assert len(blobs.seen) == 1
        _, h = blobs.seen[0]
        assert h.get("Range", "").startswith("bytes="), h
        assert not any(k.lower() == "authorization" for k in h), h
        assert all(h.get("Authorization", "").startswith("Bearer ")
                   for path, h in lreg.px.log if "/blobs/" in path)
    finally:
        other.stop_all()


def rotate_token_key(lreg, name):
    """The registry restarted trusting only a new key, which the token
    server now signs with: every token issued before is refused."""
    key, cert, der = token_signer(lreg.tmp / name)
    lreg.reg.stop()
    shutil.copy(cert, lreg.trusted)
    lreg.tok.key, lreg.tok.cert_der = key, der
    assert lreg.reg.start()


def login(reg, user, password):
    run([STRATA, "login", "--tls-verify=false", "-u", user,
         "--password-stdin", reg.addr], input=password + "\n")


def test_token_rotated_refreshed_with_login_creds(lreg, daemon, store,
                                                   tmp_path, monkeypatch):
    """Credentials kept by `strata login` (not given to the mount); the
    registry then rotates its token signing key: the token the mount
    holds is refused with 401, a new one is fetched with the login's
    credentials and the read succeeds. Then the password changes and the
    user logs in again: the mount, refused by the token server with the
    old password, reads the auth file again and goes on, no remount."""
    auth = tmp_path / "auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    reg = lreg.reg
    login(reg, *CREDS)
    assert reg.addr in json.loads(auth.read_text())["auths"]
    mnt = tmp_path / "m"
    p = daemon.start(f"docker://{reg.addr}/l/z:t", mnt,
                     opts="prefetch=0,tls_verify=false")
    assert (mnt / "data/f5").read_bytes() == lreg.contents["f5"]
    before = len(lreg.tok.seen)
    rotate_token_key(lreg, "tok-rotated")
    assert (mnt / "data/f0").read_bytes() == lreg.contents["f0"]
    fresh = lreg.tok.seen[before:]
    assert fresh and all(u == CREDS[0] for _, _, u in fresh), fresh

    try:
        lreg.tok.creds = (CREDS[0], "n3w")
        login(reg, CREDS[0], "n3w")
        before = len(lreg.tok.seen)
        rotate_token_key(lreg, "tok-rotated-2")
        assert (mnt / "data/f1").read_bytes() == lreg.contents["f1"]
        # refused with the old password, given with the new one
        assert [u for _, _, u in lreg.tok.seen[before:]][-2:] == \
            [None, CREDS[0]], lreg.tok.seen[before:]
    finally:
        lreg.tok.creds = CREDS
    log = daemon.log(p)
    assert "cannot fetch" not in log and "retrying" not in log, log


def refused(lreg):
    """Answers 401 the registry gave through the proxy to requests for
    the image (not the API probe, /v2/, which asks for the challenge)."""
    return [p for p, st in lreg.px.statuses if st == 401 and p != "/v2/"]


def test_token_renewed_before_it_expires(lreg, daemon, store, tmp_path):
    """Tokens that live 2 s (expires_in, and the JWT's exp, which the
    registry enforces): reads across their lives, the last five at once
    when the token is due for renewal. No request ever goes out with an
    expired token (no 401 through the proxy), the five readers share
    one new token, and the tree equals umoci's unpack. The first token
    is refused by the registry by then: the test can see an expired
    token used."""
    tok, px = lreg.tok, lreg.px
    tok.expires_in, tok.leeway = 2, 60
    p, mnt = mount_proxied(lreg, daemon, tmp_path / "m")
    before = len(tok.seen)
    for name in NAMES[:2]:
        time.sleep(1.05)    # past the renewal point (half its life)
        assert (mnt / "data" / name).read_bytes() == lreg.contents[name]
    assert len(tok.seen) - before >= 2, tok.seen[before:]
    # the next tokens live long: one fetch serves all five readers
    tok.expires_in, tok.leeway = 300, 0
    time.sleep(1.05)
    before = len(tok.seen)
    got = {}
    readers = [threading.Thread(target=lambda n=n: got.update(
        {n: (mnt / "data" / n).read_bytes()})) for n in NAMES[2:] + ["big"]]
    for t in readers:
        t.start()
    for t in readers:
        t.join(60)
    assert got == {n: lreg.contents[n] for n in NAMES[2:] + ["big"]}
    assert len(tok.seen) - before == 1, tok.seen[before:]
    assert not refused(lreg), refused(lreg)
    assert_same_as_umoci(mnt, lreg.orig, "t", tmp_path / "u")
    # the registry does refuse an expired token: the first one used, once
    # the registry's 60 s of leeway past its exp (less the token server's
    # 60) have run out (how long the reads took decided it before)
    first = next(h["Authorization"] for _, h in px.log
                 if h.get("Authorization", "").startswith("Bearer "))
    claims = json.loads(base64.urlsafe_b64decode(
        first.split()[1].split(".")[1] + "=="))
    time.sleep(max(0.0, claims["exp"] + 60 + 1 - time.time()))
    c = http.client.HTTPConnection("127.0.0.1", lreg.reg.port, timeout=30)
    c.request("GET", "/v2/l/z/manifests/t", headers={"Authorization": first})
    assert c.getresponse().status == 401
    c.close()
    log = daemon.log(p)
    assert "token" not in log and "retrying" not in log, log


def test_token_server_down_at_renewal(lreg, daemon, store, tmp_path):
    """A token that says it lives 2 s (the registry would take it for
    longer) and a token server that is down when it is due for renewal:
    the read goes on with the token held, no 401, one log line; once the
    token server is back, the next read renews it."""
    tok = lreg.tok
    tok.expires_in, tok.valid_for = 2, 300
    p, mnt = mount_proxied(lreg, daemon, tmp_path / "m")
    tok.down = True
    before = len(tok.seen)
    time.sleep(1.05)
    assert (mnt / "data/f0").read_bytes() == lreg.contents["f0"]
    assert len(tok.seen) > before, "no renewal was tried"
    log = daemon.log(p)
    assert log.count("token held is used") == 1, log
    assert "HTTP 503" in log, log
    tok.down = False
    before = len(tok.seen)
    time.sleep(1.05)
    assert (mnt / "data/f1").read_bytes() == lreg.contents["f1"]
    assert len(tok.seen) - before == 1, tok.seen[before:]
    assert not refused(lreg), refused(lreg)


def futex_waiters(pid):
    """Threads of the process serving stratafs @pid sleeping on a futex
    (a mutex or condition variable: a fetch waiting for a free slot)."""
    pid = serving_pid(pid)
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if "futex" in Path(f"/proc/{pid}/task/{tid}/wchan").read_text():
                n += 1
        except OSError:
            pass
    return n


def test_fetches_in_flight_are_bounded(lreg, daemon, store, tmp_path):
    """Six first reads at once with -o fetchers=2: the proxy holds every
    blob request until two are in flight and the other four readers wait
    in stratafs for a slot (threads asleep on a futex), or until a third
    request arrives; at most two are ever in flight, and every file reads
    right."""
    px = lreg.px
    p, mnt = mount_proxied(lreg, daemon, tmp_path / "m",
                           "fetchers=2")
    base = futex_waiters(p.pid)
    px.hold.clear()
    got, errors = {}, []

    def read(name):
        try:
            got[name] = (mnt / "data" / name).read_bytes()
        except OSError as e:
            errors.append((name, e))
    readers = [threading.Thread(target=read, args=(n,)) for n in NAMES]
    for t in readers:
        t.start()
    ok = False
    with px.cond:
        for _ in range(1200):   # the proxy's changes wake it at once
            if px.inflight > 2 or (px.inflight == 2 and
                                   futex_waiters(p.pid) >= base + 4):
                ok = True
                break
            px.cond.wait(0.05)
    px.hold.set()
    for t in readers:
        t.join(60)
    assert ok, (px.inflight, futex_waiters(p.pid), base)
    assert px.max_inflight == 2, px.max_inflight
    assert not errors, errors
    assert got == {n: lreg.contents[n] for n in NAMES}


def test_background_fill_pauses_when_registry_fails(lreg, daemon, store,
                                                    tmp_path):
    """With the background fill on, a registry that fails every range
    after the table of contents (HTTP 500, retried once): the fill says
    once that it pauses, and does not try (and log) file after file; a
    first read still fetches its file when the registry is back."""
    def after_toc(path, n):
        return path.endswith("/blobs/" + lreg.layer) and n >= 2
    lreg.px.faults += [(after_toc, "500")] * 40
    addr = f"127.0.0.1:{lreg.px.server_address[1]}"
    p = daemon.start(f"docker://{addr}/l/z:t", tmp_path / "m",
                     opts="tls_verify=false,creds=" + ":".join(CREDS))
    for _ in range(600):
        log = daemon.log(p)
        if "background fill paused" in log or p.poll() is not None:
            break
        time.sleep(0.05)
    assert log.count("layer 1: background fill paused: Protocol error; "
                     "trying again in 10 s") == 1, log
    assert "cannot fetch" not in log, log
    lreg.px.faults.clear()
    assert (tmp_path / "m/data/f1").read_bytes() == lreg.contents["f1"]


def test_background_fill_downloads_the_layer_once(lreg, daemon, store,
                                                  tmp_path):
    """The background fill of a registry's layer (prefetch=all) checks
    the whole blob anyway: it fills the files from that one download
    instead of fetching each by range first. The layer's blob requests
    are the mount's (the footer and the table of contents, a small part
    of the blob) and then the blob once, [0, size) in order, nothing
    else (before, every file by range came first: the blob twice). The
    config's diff_id is recorded, every file is filled, and reads then
    give the bytes the test wrote with no request to the registry."""
    addr = f"127.0.0.1:{lreg.px.server_address[1]}"
    lreg.px.log.clear()
    p = daemon.start(f"docker://{addr}/l/z:t", tmp_path / "m",
                     opts="prefetch=all,tls_verify=false,creds="
                     + ":".join(CREDS))
    (entry,) = lazy_dirs(store)
    for _ in range(1200):
        if (entry / "diff_id").exists():
            break
        time.sleep(0.05)
    assert (entry / "diff_id").exists(), daemon.log(p)
    size = (lreg.layout / "blobs/sha256" / lreg.layer[7:]).stat().st_size
    pieces = []
    for path, h in lreg.px.log:
        if path.endswith("/blobs/" + lreg.layer):
            a, b = h["Range"].split("=")[1].split("-")
            pieces.append((int(a), int(b) + 1))
    start = [a for a, _ in pieces].index(0)
    before, stream = pieces[:start], pieces[start:]
    assert sum(b - a for a, b in before) < size // 4, pieces
    assert stream[-1][1] == size, pieces
    assert all(x[1] == y[0] for x, y in zip(stream, stream[1:])), pieces
    assert len(os.listdir(entry / "data")) == len(lreg.contents)
    lreg.px.log.clear()
    for name, data in lreg.contents.items():
        assert (tmp_path / "m/data" / name).read_bytes() == data
    assert not [q for q, _ in lreg.px.log if "/blobs/" in q]


@pytest.mark.parametrize("value", ["0", "65", "x", ""])
def test_fetchers_usage_error(value, tmp_path):
    r = run([STRATAFS, "-o", f"fetchers={value}", "docker://h/r:t",
             tmp_path], check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("stratafs: fetchers= takes a number from "
                               "1 to 64\nusage: stratafs"), r.stderr


# --- ordinary gzip layers from a registry (issue 13, scope 2) -----------

@pytest.fixture(scope="module")
def greg(lreg):
    """umoci's own layout of the same files (one gzip layer), pushed by
    skopeo as l/g:t: its layer digest."""
    policy = lreg.tmp / "policy.json"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    run(["skopeo", "--policy", policy, "copy", "-q",
         "--dest-tls-verify=false", "--dest-creds", ":".join(CREDS),
         f"oci:{lreg.orig}:t", f"docker://{lreg.reg.addr}/l/g:t"], env=env)
    index = json.loads((lreg.orig / "index.json").read_text())
    man = json.loads((lreg.orig / "blobs/sha256" / index["manifests"][0][
        "digest"].split(":")[1]).read_text())
    assert len(man["layers"]) == 1 and \
        man["layers"][0]["mediaType"].endswith("+gzip")
    return man["layers"][0]["digest"]


def gzip_ref(lreg):
    return f"docker://127.0.0.1:{lreg.px.server_address[1]}/l/g:t"


GZ_OPTS = "prefetch=0,tls_verify=false,creds=" + ":".join(CREDS)


def test_gzip_from_registry_is_lazy(lreg, greg, daemon, store, tmp_path):
    """The gzip layer is live after the pass over its download: a .zran
    entry holding the blob (the store's stored blob, synced when stored,
    so marked blob.synced: no hash again after a reboot), no unpacked
    layer, no file filled; the tree and bytes equal umoci unpack's; the
    registry stopped, every read is served from the local blob."""
    mnt = tmp_path / "m"
    daemon.start(gzip_ref(lreg), mnt, opts=GZ_OPTS)
    dirs = lazy_dirs(store)
    assert [d.name for d in dirs] == \
        [greg.replace(":", "-") + ".zran"], dirs
    assert (dirs[0] / "blob").stat().st_size == \
        (lreg.orig / "blobs/sha256" / greg.split(":")[1]).stat().st_size
    assert (dirs[0] / "blob.synced").exists()
    sha = Path(store) / "layers" / "sha256"
    assert not sha.exists() or not any(sha.iterdir())
    assert filled(store) == 0
    lreg.reg.stop()
    try:
        for name, data in lreg.contents.items():
            assert (mnt / "data" / name).read_bytes() == data, name
        assert_same_as_umoci(mnt, lreg.orig, "t", tmp_path / "umoci")
    finally:
        assert lreg.reg.start()


def mount_gzip_refused(lreg, tmp_path):
    """stratafs on the registry's gzip image, expected to fail (a mount
    made anyway is undone): its CompletedProcess."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        return subprocess.run([str(STRATAFS), "-o", GZ_OPTS,
                               gzip_ref(lreg), str(mnt)],
                              capture_output=True, text=True, timeout=120)
    finally:
        unmount(mnt)


def test_gzip_from_registry_wrong_digest_refused(lreg, greg, store,
                                                 tmp_path):
    """The registry's blob with one byte changed: the mount fails before
    it is live, naming the blob; no lazy entry is published."""
    lreg.px.faults += [(lambda p, n: p.endswith("/blobs/" + greg),
                        "flip")] * 4
    r = mount_gzip_refused(lreg, tmp_path)
    assert r.returncode != 0
    assert greg in r.stderr, r.stderr
    assert lazy_dirs(store) == []


def test_gzip_from_registry_sound_stream_wrong_digest(lreg, greg, store,
                                                     tmp_path):
    """The blob's gzip header changed (its MTIME): the stream inflates to
    the same tar, so only the download's digest check can refuse it (the
    pass does not hash a registry's bytes a second time). The mount fails
    naming the blob and the mismatch; nothing is kept, in the lazy cache
    or in blobs/."""
    lreg.px.faults += [(lambda p, n: p.endswith("/blobs/" + greg),
                        "flip-mtime")] * 4
    r = mount_gzip_refused(lreg, tmp_path)
    assert r.returncode != 0
    assert f"{greg}: digest mismatch" in r.stderr, r.stderr
    assert lazy_dirs(store) == []
    algo, hexd = greg.split(":")
    blobs = store / "images" / "blobs" / algo
    assert blobs.is_dir()  # the manifest and config were stored
    assert not (blobs / hexd).exists()


def test_gzip_from_registry_lazy0_unpacks(lreg, greg, daemon, store,
                                          tmp_path):
    """-o lazy=0: the gzip layer is pulled and unpacked in full (no lazy
    entry), the bytes umoci's."""
    mnt = tmp_path / "m"
    daemon.start(gzip_ref(lreg), mnt, opts=GZ_OPTS + ",lazy=0")
    assert lazy_dirs(store) == []
    assert any((Path(store) / "layers" / "sha256").iterdir())
    for name, data in lreg.contents.items():
        assert (mnt / "data" / name).read_bytes() == data, name


@pytest.mark.parametrize("kind", ["gzip", "zstd:chunked"])
def test_user_mount_and_fill_from_registry(kind, lreg, greg, open_dir,
                                           dev_fuse_open, mount):
    """uid nobody mounts the registry's image into its own store, the
    background fill on (prefetch=all): the gzip layer by the pass over its
    download, the zstd:chunked one by its TOC, then filled from one
    download of the blob. The fill completes (diff_id recorded, every
    file filled), the cache entry is nobody's, and every file nobody
    reads equals the bytes the test wrote."""
    nobody = 65534
    home = open_dir / "home"
    (home / "mnt").mkdir(parents=True)
    for p in (home, home / "mnt"):
        os.chown(p, nobody, nobody)
    env = dict(os.environ, HOME=str(home), STRATA_ROOT=str(home / "store"))
    env.pop("XDG_DATA_HOME", None)
    addr = f"127.0.0.1:{lreg.px.server_address[1]}"
    ref = gzip_ref(lreg) if kind == "gzip" else f"docker://{addr}/l/z:t"
    digest = greg if kind == "gzip" else lreg.layer
    lreg.px.log.clear()
    mnt = mount(ref, mnt=home / "mnt", env=env, preexec_fn=as_uid(nobody),
                opts="prefetch=all,tls_verify=false,creds=" +
                ":".join(CREDS))
    (entry,) = lazy_dirs(home / "store")
    assert entry.name.endswith(".zran") == (kind == "gzip"), entry
    for _ in range(1200):
        if (entry / "diff_id").exists():
            break
        time.sleep(0.05)
    assert (entry / "diff_id").exists()
    assert len(os.listdir(entry / "data")) == len(lreg.contents)
    assert entry.stat().st_uid == nobody
    gets = [h.get("Range") for path, h in lreg.px.log
            if path.endswith("/blobs/" + digest)]
    if kind == "gzip":	# downloaded once, whole
        assert gets == [None], gets
    else:			# TOC, then the blob once from its start
        assert [r for r in gets if r.startswith("bytes=0-")], gets
    names = sorted(lreg.contents)
    assert sha256s_as(nobody, mnt / "data", names) == \
        [hashlib.sha256(lreg.contents[n]).hexdigest() for n in names]


def test_gzip_download_cut_for_good(lreg, greg, store, tmp_path,
                                    monkeypatch):
    """The pass reads the download's file as the pull writes it: when the
    registry cuts every answer for the blob halfway (no retry left), the
    pass, waiting for bytes that never come, stops with the pull; the
    mount fails within the timeout naming the registry and the blob, and
    nothing is kept in the lazy cache or in blobs/."""
    monkeypatch.setenv("STRATA_REGISTRY_RETRIES", "1")
    lreg.px.faults += [(lambda p, n: p.endswith("/blobs/" + greg),
                        "cut")] * 8
    r = mount_gzip_refused(lreg, tmp_path)
    lreg.px.faults.clear()
    assert r.returncode != 0
    assert greg in r.stderr and "registry" in r.stderr, r.stderr
    assert lazy_dirs(store) == []
    algo, hexd = greg.split(":")
    assert not (store / "images" / "blobs" / algo / hexd).exists()
