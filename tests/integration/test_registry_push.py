"""docker:// pushes (issue 11, push side) against Debian's docker-registry.

strata commits onto an image skopeo pushed, straight to the registry;
skopeo pulls the result back and umoci unpacks it, and the tree and the
digests are compared. A recording proxy between strata and the registry
logs every request (method, path) so the tests assert what reached the
registry, and injects faults on the upload path: a relative Location
with an extra query parameter, a 416 to a chunk.

Registries and proxies are stopped in finalizers (fixtures from
test_registry.py)."""
import http.client
import http.server
import json
import os
import shutil
import threading
import urllib.parse

import pytest

from conftest import STRATA, TokenServer, run, token_signer
from test_registry import (no_proxy_env,  # noqa
                           skopeo, image, push, layer_digests)
from test_commit_peers import podman, sweep_mounts  # noqa


class RecProxy(http.server.ThreadingHTTPServer):
    """Plain HTTP proxy to @upstream logging (method, path). Faults:
    relative_location (Location made relative, "&px=1" added: the
    registry's own _state parameter stays), fail_patch (answer this many
    PATCHes after the first with 416 without forwarding them), fail_put
    (answer this many upload PUTs with 500, not forwarded)."""
    daemon_threads = True

    def __init__(self, upstream):
        super().__init__(("127.0.0.1", 0), RecHandler)
        self.upstream = upstream
        self.log = []
        self.lock = threading.Lock()
        self.relative_location = False
        self.fail_patch = 0
        self.fail_put = 0
        self.patches = 0
        self.paginate_tags = False
        self.chunk_min = None
        self.sizes = []


class RecHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def forward(self):
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with srv.lock:
            srv.log.append((self.command, self.path))
            srv.sizes.append(n)
            fail = False
            if self.command == "PUT" and srv.fail_put > 0 and \
                    "/blobs/uploads/" in self.path:
                srv.fail_put -= 1
                fail = 500
            if self.command == "PATCH":
                srv.patches += 1
                if srv.patches > 1 and srv.fail_patch > 0:
                    srv.fail_patch -= 1
                    fail = 416
        if fail:
            self.send_response(fail)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        hdrs = {k: v for k, v in self.headers.items()
                if k.lower() not in ("content-length", "connection")}
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        page = srv.paginate_tags and u.path.endswith("/tags/list") and \
            "n" in q
        c = http.client.HTTPConnection(*srv.upstream, timeout=30)
        c.request(self.command, u.path if page else self.path, body=body,
                  headers=hdrs)
        r = c.getresponse()
        rbody = r.read()
        c.close()
        link = None
        if page and r.status == 200:
            # the spec's pagination, which this registry does not do:
            # n tags after "last", Link to the next page
            doc = json.loads(rbody)
            tags = sorted(doc["tags"])
            if "last" in q:
                tags = [t for t in tags if t > q["last"][0]]
            n = int(q["n"][0])
            if len(tags) > n:
                link = (f'<{u.path}?n={n}&last={tags[n - 1]}>; '
                        'rel="next"')
            doc["tags"] = tags[:n]
            rbody = json.dumps(doc).encode()
        self.send_response(r.status)
        if link:
            self.send_header("Link", link)
        if srv.chunk_min and self.command == "POST" and r.status == 202:
            self.send_header("OCI-Chunk-Min-Length", str(srv.chunk_min))
        for k, v in r.getheaders():
            if k.lower() in ("content-length", "connection",
                             "transfer-encoding", "date"):
                continue
            if k.lower() == "location" and srv.relative_location:
                u = urllib.parse.urlsplit(v)
                q = u.query + ("&" if u.query else "") + "px=1"
                v = urllib.parse.urlunsplit(("", "", u.path, q, ""))
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(rbody)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(rbody)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward


@pytest.fixture
def pushed(image, registry, skopeo, servers):
    """(proxy, "127.0.0.1:PROXYPORT", registry): the image pushed by
    skopeo to test/img:1 on a registry behind a recording proxy."""
    reg = registry()
    push(skopeo, image, f"{reg}/test/img:1")
    host, port = reg.split(":")
    px = servers.add(RecProxy((host, int(port))))
    return px, f"127.0.0.1:{px.server_address[1]}", reg


def writes(px):
    return [(m, p) for m, p in px.log if m not in ("GET", "HEAD")]


def pull_back(skopeo, ref, dest, tmp_path):
    """skopeo copy @ref to an oci layout, umoci unpack it: the rootfs."""
    out = tmp_path / dest
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}",
           f"oci:{out}:x")
    run(["umoci", "unpack", "--rootless", "--image", f"{out}:x",
         tmp_path / (dest + "-b")])
    return tmp_path / (dest + "-b") / "rootfs"


def test_commit_pushes_one_layer_config_manifest(pushed, strata, skopeo,
                                                 tmp_path, image):
    px, addr, reg = pushed
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "hello.txt").write_text("hello\n")
    # the base pulled through the proxy (its blobs' origin: test/img)
    strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
           "base:1")
    px.log.clear()
    px.fail_put = 1     # a 500 to an upload's PUT is retried
    r = strata("commit", "--tls-verify=false", "--upper", upper, "--from",
               "base:1", "--tag", "extra", f"docker://{addr}/test/img:2")
    digest = r.stdout.strip()
    w = writes(px)
    posts = [p for m, p in w if m == "POST"]
    puts = [p for m, p in w if m == "PUT"]
    # one layer and one config uploaded; the base's layers were there
    assert len(posts) == 2 and all("/blobs/uploads/" in p for p in posts)
    assert len([p for p in puts if "/blobs/uploads/" in p]) == 3
    assert [p for p in puts if "/manifests/" in p] == \
        ["/v2/test/img/manifests/2", "/v2/test/img/manifests/extra"]
    heads = [p for m, p in px.log if m == "HEAD"]
    for d in layer_digests(image):
        assert f"/v2/test/img/blobs/{d}" in heads
    # skopeo reads it back with the same digest; umoci unpacks it
    insp = json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://{reg}/test/img:extra").stdout)
    assert insp["Digest"] == digest
    root = pull_back(skopeo, f"{reg}/test/img:2", "back", tmp_path)
    assert (root / "hello.txt").read_text() == "hello\n"
    assert (root / "etc/new").read_text() == "new\n"
    assert not (root / "etc/old").exists()


def test_cross_repository_mount(pushed, strata, skopeo, tmp_path, image):
    px, addr, reg = pushed
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "x").write_text("x\n")
    strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
           "base:1")
    px.log.clear()
    strata("commit", "--tls-verify=false", "--upper", upper, "--from",
           "base:1", f"docker://{addr}/other/repo:1")
    posts = [p for m, p in px.log if m == "POST"]
    mounts = [p for p in posts if "mount=" in p]
    assert sorted(urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)
                  ["mount"][0] for p in mounts) == \
        sorted(layer_digests(image))
    assert all("from=test%2Fimg" in p or "from=test/img" in p
               for p in mounts)
    # only the new layer and config travelled
    assert len([p for m, p in px.log if m == "PUT"
                and "/blobs/uploads/" in p]) == 2
    root = pull_back(skopeo, f"{reg}/other/repo:1", "back", tmp_path)
    assert (root / "x").read_text() == "x\n"
    assert (root / "etc/motd").read_text() == "from a registry\n"


def test_chunked_relative_location_and_416(pushed, strata, skopeo,
                                           tmp_path, monkeypatch):
    px, addr, reg = pushed
    px.relative_location = True
    px.fail_patch = 1
    monkeypatch.setenv("STRATA_PUSH_CHUNK_SIZE", "65536")
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "big").write_bytes(bytes(range(256)) * 2048 +
                                 __import__("os").urandom(300000))
    strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
           "base:1")
    px.log.clear()
    r = strata("commit", "--tls-verify=false", "--compression", "none",
               "--upper", upper, "--from", "base:1",
               f"docker://{addr}/test/img:chunked")
    patches = [p for m, p in px.log if m == "PATCH"]
    assert len(patches) >= 4
    assert "pushed: 2 blobs uploaded, 0 mounted" in r.stderr
    # every request on the upload kept the registry's state and ours
    for m, p in px.log:
        if "/blobs/uploads/" in p and m in ("PATCH", "PUT"):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)
            assert q.get("px") == ["1"] and "_state" in q, p
    # the 416 made strata ask the upload where it stands
    assert any(m == "GET" and "/blobs/uploads/" in p for m, p in px.log)
    root = pull_back(skopeo, f"{reg}/test/img:chunked", "back", tmp_path)
    assert (root / "big").read_bytes() == (upper / "big").read_bytes()
    # a registry's minimum chunk size is honoured (all but the last)
    px.log.clear()
    px.sizes.clear()
    px.chunk_min = 200000
    (upper / "big").write_bytes(__import__("os").urandom(700000))
    strata("commit", "--tls-verify=false", "--compression", "none",
           "--upper", upper, "--from", "base:1",
           f"docker://{addr}/test/img:chunkmin")
    sizes = [n for (m, p), n in zip(px.log, px.sizes) if m == "PATCH"]
    assert len(sizes) >= 3 and all(n == 200000 for n in sizes[:-1]), sizes


# ---------------------------------------------------------------------------
# strata copy


def test_copy_between_transports_keeps_digests(pushed, strata, skopeo,
                                               tmp_path, store, image):
    px, addr, reg = pushed
    digest = json.loads(skopeo("inspect", "--tls-verify=false",
                               f"docker://{reg}/test/img:1").stdout)["Digest"]
    # docker:// -> oci: and -> the store: same digest, skopeo reads both
    oci = tmp_path / "oci"
    assert strata("copy", "--tls-verify=false", f"docker://{addr}/test/img:1",
                  f"oci:{oci}:c").stdout.strip() == digest
    assert json.loads(skopeo("inspect", f"oci:{oci}:c").stdout)["Digest"] \
        == digest
    assert strata("copy", "--tls-verify=false", f"docker://{addr}/test/img:1",
                  "copied:1").stdout.strip() == digest
    assert json.loads(skopeo("inspect",
                             f"oci:{store}/images:copied:1").stdout)[
        "Digest"] == digest
    for dg in layer_digests(image):
        h = dg.split(":")[1]
        assert (oci / "blobs/sha256" / h).is_file()
        assert (store / "images/blobs/sha256" / h).is_file()
    # oci: -> docker:// (a registry that has nothing): every blob uploaded
    layout, tag = image
    px.log.clear()
    d2 = strata("copy", "--tls-verify=false", f"oci:{layout}:{tag}",
                f"docker://{addr}/fresh/img:1").stdout.strip()
    assert d2 == digest
    # the layers are mounted from test/img, where this store saw them
    # (its copy above): only the config travels
    uploads = [p for m, p in px.log if m == "PUT" and "/blobs/uploads/" in p]
    mounts = [p for m, p in px.log if m == "POST" and "mount=" in p]
    assert len(uploads) == 1 and len(mounts) == len(layer_digests(image))
    root = pull_back(skopeo, f"{reg}/fresh/img:1", "back", tmp_path)
    assert (root / "etc/new").read_text() == "new\n"
    # again: the registry has everything, only HEADs and the manifest PUT
    px.log.clear()
    strata("copy", "--tls-verify=false", f"oci:{layout}:{tag}",
           f"docker://{addr}/fresh/img:2")
    assert writes(px) == [("PUT", "/v2/fresh/img/manifests/2")]
    # store -> oci-archive -> skopeo
    arch = tmp_path / "img.tar"
    strata("copy", "copied:1", f"oci-archive:{arch}:a")
    assert json.loads(skopeo("inspect", f"oci-archive:{arch}:a").stdout)[
        "Digest"] == digest
    # store -> docker-archive (its own manifest.json, the same blobs)
    darch = tmp_path / "img-docker.tar"
    strata("copy", "copied:1", f"docker-archive:{darch}:d/img:1")
    insp = json.loads(skopeo("inspect", f"docker-archive:{darch}").stdout)
    cfg = json.loads(strata("inspect", "--config", "copied:1").stdout)
    assert insp["Layers"] == cfg["rootfs"]["diff_ids"]


def test_copy_docker_to_docker_mounts(pushed, strata, skopeo, tmp_path,
                                      image):
    """docker:// -> another repository of the same registry: the layers
    are mounted, never downloaded."""
    px, addr, reg = pushed
    digest = strata("copy", "--tls-verify=false", "--tag", "also",
                    f"docker://{addr}/test/img:1",
                    f"docker://{addr}/mirror/img:1").stdout.strip()
    gets = [p for m, p in px.log if m == "GET" and "/blobs/sha256:" in p]
    cfg = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                            f"docker://{reg}/test/img:1").stdout)["config"]
    # only the config was read (resolving the image needs it)
    assert gets == [f"/v2/test/img/blobs/{cfg['digest']}"]
    mounts = [p for m, p in px.log if m == "POST" and "mount=" in p]
    assert len(mounts) == len(layer_digests(image))
    for t in ("1", "also"):
        insp = json.loads(skopeo("inspect", "--tls-verify=false",
                                 f"docker://{reg}/mirror/img:{t}").stdout)
        assert insp["Digest"] == digest


# ---------------------------------------------------------------------------
# login, logout, ls-tags


def test_login_with_skopeo(image, registry, skopeo, strata, tmp_path,
                           monkeypatch):
    ht = tmp_path / "htpasswd"
    run(["htpasswd", "-Bbc", ht, "alice", "s3cret"])
    reg = registry("auth:\n  htpasswd:\n    realm: strata-test\n"
                   f"    path: {ht}\n")
    push(skopeo, image, f"{reg}/test/img:1", "--dest-creds", "alice:s3cret")
    af = tmp_path / "run/containers/auth.json"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # wrong password: refused, nothing written
    r = run([STRATA, "login", "--tls-verify=false", "-u", "alice",
             "--password-stdin", reg], check=False, input="nope\n")
    assert r.returncode == 1 and "were refused" in r.stderr
    assert not af.exists()
    run([STRATA, "login", "--tls-verify=false", "--username", "alice",
         "--password-stdin", reg], input="s3cret\n")
    assert af.stat().st_mode & 0o777 == 0o600
    # skopeo uses what strata wrote
    skopeo("inspect", "--tls-verify=false", "--authfile", af,
           f"docker://{reg}/test/img:1")
    strata("inspect", "--tls-verify=false", f"docker://{reg}/test/img:1")
    strata("logout", reg)
    assert reg not in json.loads(af.read_text())["auths"]
    r = strata("inspect", "--tls-verify=false", f"docker://{reg}/test/img:1",
               check=False)
    assert r.returncode == 1 and "authentication required" in r.stderr
    r = strata("logout", reg, check=False)
    assert r.returncode == 1 and "not logged in" in r.stderr
    # strata uses what skopeo login wrote
    skopeo("login", "--tls-verify=false", "--authfile", af, "-u", "alice",
           "-p", "s3cret", reg)
    strata("inspect", "--tls-verify=false", f"docker://{reg}/test/img:1")
    strata("logout", "--all")
    assert json.loads(af.read_text())["auths"] == {}


def test_ls_tags_pages(pushed, strata, skopeo):
    px, addr, reg = pushed
    want = ["1"] + [f"t{i}" for i in range(6)]
    for t in want[1:]:
        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{reg}/test/img:1", f"docker://{reg}/test/img:{t}")
    px.log.clear()
    px.paginate_tags = True
    out = strata("ls-tags", "--tls-verify=false", "--page-size", "2",
                 f"docker://{addr}/test/img").stdout.split()
    assert sorted(out) == sorted(want)
    pages = [p for m, p in px.log if "/tags/list" in p]
    assert len(pages) == 4 and "last=" in pages[1]


# ---------------------------------------------------------------------------
# podman runs what strata pushed


@pytest.mark.skipif(not shutil.which("podman") or os.geteuid() != 0,
                    reason="podman as root")
def test_podman_runs_pushed_image(pushed, strata, tmp_path, podman):
    px, addr, reg = pushed
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "hello.txt").write_text("pushed by strata\n")
    strata("commit", "--tls-verify=false", "--upper", upper, "--from",
           f"docker://{addr}/test/img:1", f"docker://{reg}/run/img:1")
    r = podman("run", "--rm", "--signature-policy", podman.policy,
               "--tls-verify=false", "--ulimit", "nofile=1024:1024",
               "--ulimit", "nproc=1024:1024", "--network", "none",
               f"{reg}/run/img:1", "cat", "/hello.txt", "/etc/motd",
               timeout=300)
    assert r.stdout == "pushed by strata\nfrom a registry\n"


def test_token_auth_push_scopes(image, registry, skopeo, strata, tmp_path,
                                servers, monkeypatch):
    """Bearer tokens: a push asks repository:NAME:pull,push and pull on
    the repository its layers are mounted from; login asks a token for
    no repository; the registry (which checks each token's access) takes
    it all."""
    key, cert, der = token_signer(tmp_path / "tok")
    tok = servers.add(TokenServer(key, der, "strata-test",
                                  ("bob", "t0ken")))
    realm = f"http://127.0.0.1:{tok.server_address[1]}/token"
    reg = registry("auth:\n  token:\n"
                   f"    realm: {realm}\n    service: strata-test\n"
                   "    issuer: strata-test-issuer\n"
                   f"    rootcertbundle: {cert}\n")
    push(skopeo, image, f"{reg}/test/img:1", "--dest-creds", "bob:t0ken")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    tok.seen.clear()
    run([STRATA, "login", "--tls-verify=false", "-u", "bob",
         "--password-stdin", reg], input="t0ken\n")
    assert tok.seen and tok.seen[0][0] == [] and tok.seen[0][2] == "bob"
    strata("import", "--tls-verify=false", f"docker://{reg}/test/img:1",
           "base:1")
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "t").write_text("t\n")
    tok.seen.clear()
    strata("commit", "--tls-verify=false", "--upper", upper, "--from",
           "base:1", f"docker://{reg}/team/app:1")
    scopes = {s for sc, _, _ in tok.seen for s in sc}
    assert scopes == {"repository:team/app:pull,push",
                      "repository:test/img:pull"}, tok.seen
    insp = json.loads(skopeo("inspect", "--tls-verify=false", "--creds",
                             "bob:t0ken",
                             f"docker://{reg}/team/app:1").stdout)
    assert len(insp["Layers"]) == 3


def test_push_progress_on_a_terminal_only(pushed, strata, image):
    """A push shows, on a terminal, the blob being sent, its digest and
    the rate; piped it shows nothing of it."""
    from test_registry import run_on_pty
    px, addr, reg = pushed
    layout, tag = image
    rc, shown, out = run_on_pty([STRATA, "copy", "--tls-verify=false",
                                 f"oci:{layout}:{tag}",
                                 f"docker://{addr}/test/tty:1"])
    assert rc == 0, shown
    lines = [l for l in shown.split("\r") if "pushing blob" in l]
    assert any(d[:19] in l and "MiB/s" in l for l in lines
               for d in layer_digests(image)), lines[:5]
    r = strata("copy", "--tls-verify=false", f"oci:{layout}:{tag}",
               f"docker://{addr}/test/piped:1")
    assert "pushing blob" not in r.stderr and "\r" not in r.stderr, r.stderr
