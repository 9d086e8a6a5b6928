"""docker:// pulls (issue 11) against Debian's docker-registry.

skopeo pushes an image built with umoci; strata pulls, inspects and
mounts it; the tree is compared entry by entry with `umoci unpack` of the
same layout, and digests with what skopeo reports. Registries run over
plain HTTP, TLS with a CA made here by openssl, htpasswd Basic auth and
token auth (a token server in this file signing RS256 JWTs with openssl).
A fault-injecting proxy between strata and the registry cuts, stalls,
refuses, corrupts, lengthens and redirects answers.

Every registry, token server and proxy is stopped in a finalizer; every
mount is unmounted by the `mount` fixture."""
import base64
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import (STRATA, BlobServer, Proxy, TokenServer,
                      assert_same_as_umoci, free_port, run, sha256_file,
                      token_signer)

# ---------------------------------------------------------------------------
# processes, ports, images


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """Every registry here is on 127.0.0.1: no proxy from the environment
    (libcurl and urllib would both use it)."""
    for v in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(v, raising=False)


def busybox_base(root):
    (root / "bin").mkdir()
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    for a in ("sh", "ls", "cat"):
        os.symlink("busybox", root / "bin" / a)
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("from a registry\n")
    (root / "etc/old").write_text("old\n")
    os.link(root / "etc/motd", root / "etc/motd.link")
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/README").write_text("doc\n" * 1000)


def second_layer(root):
    (root / "etc/old").unlink()
    shutil.rmtree(root / "usr/share/doc")
    (root / "etc/new").write_text("new\n")
    os.chmod(root / "etc/new", 0o640)
    os.chown(root / "etc/new", 12, 34)


@pytest.fixture
def image(umoci_image):
    """(layout, tag) of a two-layer busybox image made by umoci."""
    return umoci_image([busybox_base, second_layer], name="src", tag="t")


@pytest.fixture
def skopeo(tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))

    def call(*args, check=True):
        return run(["skopeo", "--policy", policy, *args], check=check)
    return call


def push(skopeo, image, dest, *extra):
    """skopeo copy the image to docker://@dest; return the digest skopeo
    inspect reports for it there."""
    layout, tag = image
    skopeo("copy", "--dest-tls-verify=false", *extra, f"oci:{layout}:{tag}",
           f"docker://{dest}")
    creds = []
    if "--dest-creds" in extra:
        creds = ["--creds", extra[extra.index("--dest-creds") + 1]]
    insp = json.loads(skopeo("inspect", "--tls-verify=false", *creds,
                             f"docker://{dest}").stdout)
    return insp["Digest"]


def store_blobs(store):
    d = store / "images/blobs/sha256"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def layer_digests(image):
    layout, tag = image
    index = json.loads((layout / "index.json").read_text())
    m = index["manifests"][0]["digest"].split(":")[1]
    man = json.loads((layout / "blobs/sha256" / m).read_text())
    return [l["digest"] for l in man["layers"]]


def tags(strata):
    out = strata("images").stdout.split("\n")[1:]
    return [l.split()[0] for l in out if l.strip()]


# ---------------------------------------------------------------------------
# plain HTTP: pull, inspect, mount


def test_import_matches_umoci_and_skopeo(image, registry, skopeo, strata,
                                         mount, store, tmp_path):
    reg = registry()
    digest = push(skopeo, image, f"{reg}/test/img:1")
    r = strata("import", "--tls-verify=false", f"docker://{reg}/test/img:1",
               "pulled:1")
    assert r.stdout.strip() == digest
    assert tags(strata) == ["pulled:1"]
    # every blob is in the store, named by its digest
    for d in layer_digests(image):
        p = store / "images/blobs/sha256" / d.split(":")[1]
        assert "sha256:" + sha256_file(p) == d
    mnt = mount("pulled:1")
    assert_same_as_umoci(mnt, *image, tmp_path / "umoci")
    # skopeo reads back the same manifest from the store
    insp = json.loads(skopeo("inspect", f"oci:{store}/images:pulled:1").stdout)
    assert insp["Digest"] == digest


def test_mount_docker_ref_directly(image, registry, skopeo, mount, store,
                                   tmp_path):
    reg = registry()
    push(skopeo, image, f"{reg}/a/b/c:v2")
    mnt = mount(f"docker://{reg}/a/b/c:v2", opts="tls_verify=false")
    assert_same_as_umoci(mnt, *image, tmp_path / "umoci")
    # pulled into the store: a second mount downloads nothing
    for d in layer_digests(image):
        assert d.split(":")[1] in store_blobs(store)


def test_docker_schema2_push(image, registry, skopeo, strata, mount,
                             tmp_path):
    """skopeo --format v2s2 pushes Docker media types; strata pulls them
    with the digest skopeo reports."""
    reg = registry()
    digest = push(skopeo, image, f"{reg}/d/v2s2:1", "--format", "v2s2")
    r = strata("import", "--tls-verify=false", f"docker://{reg}/d/v2s2:1",
               "v2s2:1")
    assert r.stdout.strip() == digest
    j = json.loads(strata("inspect", "--json", "v2s2:1").stdout)
    assert j["mediaType"] == \
        "application/vnd.docker.distribution.manifest.v2+json"
    assert_same_as_umoci(mount("v2s2:1"), *image, tmp_path / "umoci")


def test_pull_by_digest(image, registry, skopeo, strata):
    reg = registry()
    digest = push(skopeo, image, f"{reg}/test/img:1")
    r = strata("inspect", "--tls-verify=false", "--json",
               f"docker://{reg}/test/img@{digest}")
    assert json.loads(r.stdout)["digest"] == digest
    bad = "sha256:" + "0" * 64
    r = strata("inspect", "--tls-verify=false",
               f"docker://{reg}/test/img@{bad}", check=False)
    assert r.returncode == 1
    assert reg in r.stderr and "test/img" in r.stderr and bad in r.stderr


def test_inspect_downloads_no_layer(image, registry, skopeo, strata, store):
    reg = registry()
    digest = push(skopeo, image, f"{reg}/test/img:1")
    ref = f"docker://{reg}/test/img:1"
    j = json.loads(strata("inspect", "--tls-verify=false", "--json",
                          ref).stdout)
    sk = json.loads(skopeo("inspect", "--tls-verify=false", ref).stdout)
    assert j["digest"] == digest == sk["Digest"]
    assert [l["digest"] for l in j["layers"]] == sk["Layers"]
    have = store_blobs(store)
    assert not any(d.split(":")[1] in have for d in sk["Layers"])
    raw = subprocess.run([STRATA, "inspect", "--tls-verify=false", "--raw",
                          ref], capture_output=True, check=True).stdout
    skraw = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                            "--raw", ref], capture_output=True,
                           check=True).stdout
    assert raw == skraw
    cfg = subprocess.run([STRATA, "inspect", "--tls-verify=false",
                          "--config", ref], capture_output=True,
                         check=True).stdout
    skcfg = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                            "--config", "--raw", ref], capture_output=True,
                           check=True).stdout
    assert cfg == skcfg
    assert tags(strata) == []


def test_multi_platform_index(image, registry, skopeo, strata, tmp_path,
                              mount):
    """An OCI index pushed with skopeo --all resolves to the host
    platform; --platform picks another."""
    layout, tag = image
    idx = json.loads((layout / "index.json").read_text())
    man_desc = dict(idx["manifests"][0])
    man_desc.pop("annotations", None)
    man = json.loads((layout / "blobs/sha256" /
                      man_desc["digest"].split(":")[1]).read_text())
    cfg = json.loads((layout / "blobs/sha256" /
                      man["config"]["digest"].split(":")[1]).read_text())
    # a second platform: the same layers, another architecture
    cfg2 = dict(cfg, architecture="s390x")
    c2 = json.dumps(cfg2).encode()
    import hashlib
    c2d = "sha256:" + hashlib.sha256(c2).hexdigest()
    (layout / "blobs/sha256" / c2d.split(":")[1]).write_bytes(c2)
    man2 = dict(man, config=dict(man["config"], digest=c2d, size=len(c2)))
    m2 = json.dumps(man2).encode()
    m2d = "sha256:" + hashlib.sha256(m2).hexdigest()
    (layout / "blobs/sha256" / m2d.split(":")[1]).write_bytes(m2)
    ix = {"schemaVersion": 2,
          "mediaType": "application/vnd.oci.image.index.v1+json",
          "manifests": [
              dict(man_desc, platform={"os": "linux",
                                       "architecture": cfg["architecture"]}),
              {"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": m2d, "size": len(m2),
               "platform": {"os": "linux", "architecture": "s390x"}}]}
    ixb = json.dumps(ix).encode()
    ixd = "sha256:" + hashlib.sha256(ixb).hexdigest()
    (layout / "blobs/sha256" / ixd.split(":")[1]).write_bytes(ixb)
    idx["manifests"].append({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": ixd, "size": len(ixb),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(idx))
    reg = registry()
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi",
           f"docker://{reg}/multi:1")
    ref = f"docker://{reg}/multi:1"
    j = json.loads(strata("inspect", "--tls-verify=false", "--json",
                          ref).stdout)
    assert j["digest"] == man_desc["digest"]
    j = json.loads(strata("inspect", "--tls-verify=false", "--json",
                          "--platform", "linux/s390x", ref).stdout)
    assert j["digest"] == m2d and j["platform"]["architecture"] == "s390x"
    strata("import", "--tls-verify=false", ref, "multi:1")
    mnt = mount("multi:1")
    assert_same_as_umoci(mnt, layout, tag, tmp_path / "umoci")


def test_missing_repository_and_manifest(image, registry, skopeo, strata):
    reg = registry()
    push(skopeo, image, f"{reg}/test/img:1")
    r = strata("inspect", "--tls-verify=false", f"docker://{reg}/nope/x:1",
               check=False)
    assert r.returncode == 1 and "no repository nope/x" in r.stderr, r.stderr
    assert reg in r.stderr
    r = strata("inspect", "--tls-verify=false", f"docker://{reg}/test/img:2",
               check=False)
    assert r.returncode == 1, r.stderr
    assert "repository test/img" in r.stderr and "manifest 2" in r.stderr
    assert "no such manifest" in r.stderr


def test_https_needed_unless_insecure(image, registry, skopeo, strata,
                                      tmp_path, monkeypatch):
    reg = registry()
    push(skopeo, image, f"{reg}/test/img:1")
    ref = f"docker://{reg}/test/img:1"
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    r = strata("inspect", ref, check=False)
    assert r.returncode == 1
    assert reg in r.stderr and "--tls-verify=false" in r.stderr, r.stderr
    conf.write_text('unqualified-search-registries = []\n\n'
                    '[[registry]]\n'
                    f'location = "{reg}"\n'
                    'insecure = true\n')
    strata("import", ref, "viaconf:1")
    assert tags(strata) == ["viaconf:1"]


# ---------------------------------------------------------------------------
# TLS with a CA made here


def make_ca_and_cert(d, cn="127.0.0.1"):
    d.mkdir(parents=True, exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "2",
         "-subj", "/CN=strata test CA"])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes",
         "-keyout", d / "server.key", "-out", d / "server.csr",
         "-subj", f"/CN={cn}"])
    (d / "ext.cnf").write_text(f"subjectAltName=IP:{cn},DNS:localhost\n")
    run(["openssl", "x509", "-req", "-in", d / "server.csr", "-CA",
         d / "ca.crt", "-CAkey", d / "ca.key", "-CAcreateserial",
         "-out", d / "server.crt", "-days", "2", "-extfile", d / "ext.cnf"])
    return d / "ca.crt", d / "server.crt", d / "server.key"


def test_tls_with_certs_d(image, registry, skopeo, strata, mount, tmp_path,
                          monkeypatch):
    ca, crt, key = make_ca_and_cert(tmp_path / "pki")
    reg = registry(tls=(crt, key))
    digest = push(skopeo, image, f"{reg}/test/img:1")
    ref = f"docker://{reg}/test/img:1"
    certs = tmp_path / "certs.d"
    monkeypatch.setenv("STRATA_CERTS_D", str(certs))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "none"))
    # unknown CA: refused, and the message says what to do
    r = strata("inspect", ref, check=False)
    assert r.returncode == 1 and "certs.d" in r.stderr, r.stderr
    # the CA in certs.d/HOST:PORT/
    (certs / reg).mkdir(parents=True)
    shutil.copy(ca, certs / reg / "ca.crt")
    assert strata("import", ref, "tls:1").stdout.strip() == digest
    # --cert-dir instead of certs.d
    monkeypatch.setenv("STRATA_CERTS_D", str(tmp_path / "empty"))
    cd = tmp_path / "certdir"
    cd.mkdir()
    shutil.copy(ca, cd / "my.crt")
    j = json.loads(strata("inspect", "--json", "--cert-dir", cd, ref).stdout)
    assert j["digest"] == digest
    # --tls-verify=false accepts the unknown CA too
    strata("inspect", "--tls-verify=false", ref)
    # and stratafs with cert_dir=
    mnt = mount(ref, opts=f"cert_dir={cd}")
    assert_same_as_umoci(mnt, *image, tmp_path / "umoci")


# ---------------------------------------------------------------------------
# htpasswd Basic auth


def test_basic_auth(image, registry, skopeo, strata, tmp_path, monkeypatch):
    ht = tmp_path / "htpasswd"
    run(["htpasswd", "-Bbc", ht, "alice", "s3cret"])
    reg = registry("auth:\n  htpasswd:\n    realm: strata-test\n"
                   f"    path: {ht}\n")
    digest = push(skopeo, image, f"{reg}/test/img:1",
                  "--dest-creds", "alice:s3cret")
    ref = f"docker://{reg}/test/img:1"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    r = strata("inspect", "--tls-verify=false", ref, check=False)
    assert r.returncode == 1
    assert reg in r.stderr and "authentication required" in r.stderr
    assert "--creds" in r.stderr
    r = strata("inspect", "--tls-verify=false", "--creds", "alice:wrong",
               ref, check=False)
    assert r.returncode == 1 and "authentication required" in r.stderr
    assert "credentials (from --creds) were refused" in r.stderr
    assert strata("import", "--tls-verify=false", "--creds", "alice:s3cret",
                  ref, "basic:1").stdout.strip() == digest
    # an auth file (containers-auth.json), and ~/.docker/config.json
    auth = {"auths": {reg: {"auth": base64.b64encode(
        b"alice:s3cret").decode()}}}
    af = tmp_path / "auth.json"
    af.write_text(json.dumps(auth))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(af))
    strata("inspect", "--tls-verify=false", ref)
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    (tmp_path / "home/.docker").mkdir(parents=True)
    (tmp_path / "home/.docker/config.json").write_text(json.dumps(auth))
    strata("inspect", "--tls-verify=false", ref)


# ---------------------------------------------------------------------------
# token auth: a token server signing RS256 JWTs with openssl


def test_token_auth(image, registry, skopeo, strata, tmp_path, servers,
                    monkeypatch):
    key, cert, der = token_signer(tmp_path / "tok")
    tok = servers.add(TokenServer(key, der, "strata-test",
                                  ("bob", "t0ken")))
    realm = f"http://127.0.0.1:{tok.server_address[1]}/token"
    reg = registry("auth:\n  token:\n"
                   f"    realm: {realm}\n    service: strata-test\n"
                   "    issuer: strata-test-issuer\n"
                   f"    rootcertbundle: {cert}\n")
    digest = push(skopeo, image, f"{reg}/test/img:1",
                  "--dest-creds", "bob:t0ken")
    ref = f"docker://{reg}/test/img:1"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    r = strata("inspect", "--tls-verify=false", ref, check=False)
    assert r.returncode == 1 and "token server" in r.stderr, r.stderr
    assert "anonymous" in r.stderr and reg in r.stderr
    tok.seen.clear()
    assert strata("import", "--tls-verify=false", "--creds", "bob:t0ken",
                  ref, "token:1").stdout.strip() == digest
    scopes = {s for sc, _, _ in tok.seen for s in sc}
    assert scopes == {"repository:test/img:pull"}, tok.seen
    assert all(sv == ["strata-test"] for _, sv, _ in tok.seen)
    # one token serves every request of the pull (cached until expiry)
    assert len(tok.seen) <= 2, tok.seen

    # the Bearer token never goes to the host a blob is redirected to
    px = servers.add(Proxy(("127.0.0.1", int(reg.split(":")[1]))))
    px.forward_auth = True
    other = servers.add(BlobServer(image[0]))
    px.other = f"http://localhost:{other.server_address[1]}"
    for dg in layer_digests(image):
        px.faults.append((blob_pred(dg), "redirect"))
    addr = f"127.0.0.1:{px.server_address[1]}"
    strata("--root", tmp_path / "store2", "import", "--tls-verify=false",
           "--creds", "bob:t0ken", f"docker://{addr}/test/img:1", "token:2")
    assert len(other.seen) == len(layer_digests(image))
    for _, h in other.seen:
        assert not any(k.lower() == "authorization" for k in h), h
    assert any(h.get("Authorization", "").startswith("Bearer ")
               for p, h in px.log if "/manifests/" in p)


# ---------------------------------------------------------------------------
# the fault-injecting proxy


@pytest.fixture
def proxied(image, registry, skopeo, servers, monkeypatch):
    """(proxy, "127.0.0.1:PROXYPORT", digest, layer digests): the image
    pushed to a registry behind a fault-injecting proxy."""
    reg = registry()
    digest = push(skopeo, image, f"{reg}/test/img:1")
    host, port = reg.split(":")
    px = servers.add(Proxy((host, int(port))))
    monkeypatch.setenv("STRATA_REGISTRY_TIMEOUT", "2")
    yield px, f"127.0.0.1:{px.server_address[1]}", digest, \
        layer_digests(image)
    px.stall_event.set()


def blob_pred(digest):
    return lambda path, n: path.endswith("/blobs/" + digest)


def biggest_layer(image):
    layout, _ = image
    return max(layer_digests(image), key=lambda d: (
        layout / "blobs/sha256" / d.split(":")[1]).stat().st_size)


def test_cut_connection_resumes_with_range(image, proxied, strata, mount,
                                           tmp_path):
    px, addr, digest, layers = proxied
    big = biggest_layer(image)
    px.faults.append((blob_pred(big), "cut"))
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "cut:1")
    assert r.stdout.strip() == digest
    gets = [h for p, h in px.log if p.endswith("/blobs/" + big)]
    assert len(gets) == 2 and "Range" not in gets[0], gets
    assert gets[1]["Range"].startswith("bytes=") and \
        gets[1]["Range"] != "bytes=0-", gets
    assert_same_as_umoci(mount("cut:1"), *image, tmp_path / "umoci")


def test_resume_answered_with_whole_body(image, proxied, strata, mount,
                                         tmp_path):
    px, addr, digest, layers = proxied
    big = biggest_layer(image)
    px.faults.append((blob_pred(big), "cut-ignore-range"))
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "c200:1")
    assert r.stdout.strip() == digest
    assert_same_as_umoci(mount("c200:1"), *image, tmp_path / "umoci")


def test_stalled_connection_times_out_and_retries(image, proxied, strata):
    px, addr, digest, layers = proxied
    big = biggest_layer(image)
    px.faults.append((blob_pred(big), "stall"))
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "stall:1")
    assert r.stdout.strip() == digest
    assert "retrying" in r.stderr
    gets = [h for p, h in px.log if p.endswith("/blobs/" + big)]
    assert len(gets) == 2 and "Range" in gets[1]


def test_429_and_500_are_retried(image, proxied, strata):
    px, addr, digest, layers = proxied
    px.faults.append((lambda p, n: "/manifests/" in p, "429"))
    px.faults.append((lambda p, n: "/manifests/" in p, "500"))
    px.faults.append((blob_pred(layers[0]), "500"))
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "retry:1")
    assert r.stdout.strip() == digest
    assert "HTTP 429" in r.stderr and "HTTP 500" in r.stderr


def test_retries_are_bounded(image, proxied, strata, monkeypatch):
    px, addr, digest, layers = proxied
    monkeypatch.setenv("STRATA_REGISTRY_RETRIES", "2")
    for _ in range(3):
        px.faults.append((lambda p, n: "/manifests/" in p, "500"))
    r = strata("inspect", "--tls-verify=false",
               f"docker://{addr}/test/img:1", check=False)
    assert r.returncode == 1 and "HTTP 500" in r.stderr, r.stderr
    assert sum(1 for p, _ in px.log if "/manifests/" in p) == 3


@pytest.mark.parametrize("fault,words", [
    ("flip", "digest mismatch"),
    ("long", "longer than the descriptor"),
])
def test_bad_blob_refused_nothing_tagged(image, proxied, strata, store,
                                         fault, words):
    px, addr, digest, layers = proxied
    big = biggest_layer(image)
    px.faults.append((blob_pred(big), fault))
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "bad:1", check=False)
    assert r.returncode == 1
    for w in (words, addr, "test/img", big):
        assert w in r.stderr, r.stderr
    assert tags(strata) == []
    assert big.split(":")[1] not in store_blobs(store)
    layers_dir = store / "layers/sha256"
    assert not layers_dir.exists() or len([
        p for p in layers_dir.iterdir() if not p.name.endswith(".lock")]) \
        <= len(layers) - 1
    # a later, clean pull works
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "good:1")
    assert r.stdout.strip() == digest


@pytest.mark.parametrize("fault,words", [
    ("dcd", "Docker-Content-Digest sha256:1111"),
    ("huge", "larger than the 4194304 bytes allowed"),
    ("schema1", "malformed JWS signature block"),
])
def test_bad_manifest_refused(image, proxied, strata, store, fault, words):
    px, addr, digest, layers = proxied
    px.faults.append((lambda p, n: "/manifests/" in p, fault))
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "bad:1", check=False)
    assert r.returncode == 1
    for w in (words, addr, "test/img", "manifest 1"):
        assert w in r.stderr, r.stderr
    assert tags(strata) == []
    assert digest.split(":")[1] not in store_blobs(store)


def test_redirect_to_another_host_drops_credentials(image, proxied, strata,
                                                    servers, mount,
                                                    tmp_path):
    px, addr, digest, layers = proxied
    other = servers.add(BlobServer(image[0]))
    # "localhost" is another host than "127.0.0.1" to a client
    px.other = f"http://localhost:{other.server_address[1]}"
    px.require_basic = "Basic " + base64.b64encode(b"carol:pw").decode()
    for d in layers:
        px.faults.append((blob_pred(d), "redirect"))
    strata("import", "--tls-verify=false", "--creds", "carol:pw",
           f"docker://{addr}/test/img:1", "redir:1")
    assert len(other.seen) == len(layers)
    for path, h in other.seen:
        assert "Authorization" not in h and "authorization" not in h, h
    blob_gets = [h for p, h in px.log if "/blobs/" in p]
    assert any(h.get("Authorization") == px.require_basic
               for h in blob_gets)
    assert_same_as_umoci(mount("redir:1"), *image, tmp_path / "umoci")


def test_killed_pull_leaves_nothing_tagged_and_resumes(image, proxied,
                                                       store, strata):
    px, addr, digest, layers = proxied
    px.slow = True
    big = biggest_layer(image)
    p = subprocess.Popen([str(STRATA), "import", "--tls-verify=false",
                          f"docker://{addr}/test/img:1", "killed:1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    partial = store / "tmp" / ("pull-sha256-" + big.split(":")[1])
    try:
        for _ in range(3000):
            if partial.exists() and partial.stat().st_size > 100000:
                break
            if p.poll() is not None:
                break
            time.sleep(0.01)
        assert p.poll() is None, p.stderr.read()
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert tags(strata) == []
    have = partial.stat().st_size
    assert have > 0
    px.slow = False
    n_before = len(px.log)
    r = strata("import", "--tls-verify=false", f"docker://{addr}/test/img:1",
               "killed:1")
    assert r.stdout.strip() == digest
    gets = [h for p_, h in px.log[n_before:] if p_.endswith("/blobs/" + big)]
    assert gets and gets[0].get("Range", "").startswith("bytes="), gets
    assert not partial.exists()


# ---------------------------------------------------------------------------
# commit onto a pulled image


def test_commit_of_a_docker_mount(image, registry, skopeo, strata, mount,
                                  tmp_path):
    """A writable mount of docker://...:1 commits onto what was mounted
    (the mount names it by digest, which the store holds); umoci reads
    the result."""
    reg = registry()
    push(skopeo, image, f"{reg}/test/img:1")
    upper = tmp_path / "upper"
    upper.mkdir()
    mnt = mount(f"docker://{reg}/test/img:1",
                opts=f"tls_verify=false,upper={upper}")
    (mnt / "hello.txt").write_text("hello\n")
    out = tmp_path / "out"
    strata("commit", mnt, f"oci:{out}:2")
    rootfs = tmp_path / "unpacked"
    run(["umoci", "unpack", "--image", f"{out}:2", rootfs])
    assert (rootfs / "rootfs/hello.txt").read_text() == "hello\n"
    assert (rootfs / "rootfs/etc/motd").read_text() == "from a registry\n"
    # --from a docker:// reference, layers pulled on the way
    up2 = tmp_path / "up2"
    up2.mkdir()
    (up2 / "x").write_text("x\n")
    strata("commit", "--tls-verify=false", "--upper", up2, "--from",
           f"docker://{reg}/test/img:1", "fromreg:1")
    m = mount("fromreg:1")
    assert (m / "x").read_text() == "x\n"
    assert (m / "etc/new").read_text() == "new\n"
    # and pushes (test_registry_push.py has the rest)
    strata("commit", "--tls-verify=false", "--upper", up2, "--from",
           "fromreg:1", f"docker://{reg}/test/img:2")
    skopeo("inspect", "--tls-verify=false", f"docker://{reg}/test/img:2")


def test_digest_ref_in_store_needs_no_registry(image, registry, skopeo,
                                               strata, mount, tmp_path):
    reg = registry()
    digest = push(skopeo, image, f"{reg}/test/img:1")
    strata("import", "--tls-verify=false", f"docker://{reg}/test/img:1",
           "x:1")
    # a reference by digest to a registry nobody answers at
    port = free_port()
    ref = f"docker://127.0.0.1:{port}/test/img@{digest}"
    j = json.loads(strata("inspect", "--json", ref).stdout)
    assert j["digest"] == digest
    mnt = mount(ref)
    assert_same_as_umoci(mnt, *image, tmp_path / "umoci")
    # by tag it must ask, and says who did not answer
    r = strata("inspect", f"docker://127.0.0.1:{port}/test/img:1",
               check=False)
    assert r.returncode == 1 and f"127.0.0.1:{port}" in r.stderr


def test_cached_layers_only_fetch_missing_blobs(image, registry, skopeo,
                                                strata, store, tmp_path):
    """Layers already unpacked (say from an oci: layout) are not unpacked
    again; the blobs the store lacks are still downloaded and verified,
    so the tag has every blob it names."""
    layout, tag = image
    reg = registry()
    digest = push(skopeo, image, f"{reg}/test/img:1")
    # layers unpacked from the layout; then the store loses the blobs
    strata("import", f"oci:{layout}:{tag}", "tmp:1")
    strata("rmi", "tmp:1")
    for d in layer_digests(image):
        (store / "images/blobs/sha256" / d.split(":")[1]).unlink()
    before = {p.name: p.stat().st_ino
              for p in (store / "layers/sha256").iterdir()}
    r = strata("import", "--tls-verify=false", f"docker://{reg}/test/img:1",
               "again:1")
    assert r.stdout.strip() == digest
    after = {p.name: p.stat().st_ino
             for p in (store / "layers/sha256").iterdir()}
    assert before == after
    for d in layer_digests(image):
        p = store / "images/blobs/sha256" / d.split(":")[1]
        assert "sha256:" + sha256_file(p) == d


def run_on_pty(args, timeout=120, env=None):
    """Run @args with standard error on a pseudo-terminal (standard output
    a pipe); return (status, what the terminal showed, stdout)."""
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE,
                         stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    shown = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = os.read(master, 65536)
        except OSError:		# EIO: the child closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    out = p.stdout.read().decode()
    return p.wait(timeout=timeout), shown.decode(errors="replace"), out


def test_pull_progress_on_a_terminal_only(image, proxied, strata, store):
    """A pull shows, on a terminal, each layer in flight with its share
    and the total with a rate; piped or with --quiet it shows nothing
    but errors."""
    px, addr, digest, layers = proxied
    px.slow = True		# long enough for several redraws
    src = f"docker://{addr}/test/img:1"
    rc, shown, out = run_on_pty([STRATA, "import", "--tls-verify=false",
                                 src, "tty:1"])
    assert rc == 0 and out.strip() == digest, (rc, shown)
    lines = [l for l in shown.split("\r") if "pulling layers" in l]
    assert lines, shown
    hexes = {d.split(":")[1][:12] for d in layers}
    seen = {h for h in hexes if any(f"{h} " in l for l in lines)}
    assert seen, (hexes, lines[:5])
    assert any("MiB/s" in l and "%" in l for l in lines), lines[:5]
    # piped, and --quiet on a terminal, each into a store of its own (so
    # every layer is pulled again): no progress
    env = dict(os.environ, STRATA_ROOT=str(store) + "-piped")
    r = strata("import", "--tls-verify=false", src, "piped:1", env=env)
    assert r.stdout.strip() == digest
    assert "pulling" not in r.stderr and "\r" not in r.stderr, r.stderr
    env = dict(os.environ, STRATA_ROOT=str(store) + "-quiet")
    rc, shown, out = run_on_pty([STRATA, "--quiet", "import",
                                 "--tls-verify=false", src, "quiet:1"],
                                env=env)
    assert rc == 0 and out.strip() == digest, shown
    assert "pulling" not in shown and "MiB" not in shown, shown

