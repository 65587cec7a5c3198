"""The bench's world, all on loopback, the same kind the real-registry tests start
(tests/real_registry/world.rs), written for a script:

| what | where | role |
| --- | --- | --- |
| token server (this process, a thread) | https://127.0.0.1:<t>/token | Docker token auth, ES256 JWTs with an x5c chain |
| docker-registry `direct` | 127.0.0.1:<p> | token auth, read-write: skopeo pushes the images here |
| docker-registry `login` | contoso.azurecr.test = 127.0.0.1:<q> | token auth, read-only, `redirect` middleware: what every client pulls from |
| nginx | contoso.eastus.data.azurecr.test = 127.0.0.2:<d> | the region's data endpoint: TLS, Range, sendfile |

Both registry instances and nginx serve one storage directory. edgepull reaches the names
through its `resolve` config; skopeo, ctr and curl through /etc/hosts, which the bench
bind-mounts in a private mount namespace (scripts/bench runs this under `unshare --mount`),
so the machine's own /etc/hosts is never touched.
"""

import base64
import ctypes
import datetime
import gzip
import hashlib
import http.server
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOGIN_HOST = "contoso.azurecr.test"
DATA_HOST = "contoso.eastus.data.azurecr.test"
DATA_IP = "127.0.0.2"
ISSUER = "edgepull-bench"
REPO = "app"
PLATFORM = "linux/arm64"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def log(msg):
    print(f"bench: {msg}", flush=True)


# ----------------------------------------------------------------------------------------
# processes


def _die_with_parent():
    """PR_SET_PDEATHSIG(SIGKILL): no server outlives the bench, even if it is killed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


class Procs:
    """Every server the bench started; all are killed by stop_all()."""

    def __init__(self):
        self.procs = []

    def spawn(self, name, argv, log_path, **kw):
        out = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent, **kw)
        out.close()
        self.procs.append((name, p))
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(n, q) for (n, q) in self.procs if q is not p]

    def stop_all(self):
        for _, p in reversed(list(self.procs)):
            self.stop(p)


def free_port(ip="127.0.0.1"):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_accepts(ip, port, proc, what, log_path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {_tail(log_path)}")
        try:
            with socket.create_connection((ip, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {ip}:{port} within {timeout}s: {_tail(log_path)}")


def _tail(path, n=2000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


# ----------------------------------------------------------------------------------------
# PKI


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key, subject, issuer_key, issuer, exts, serial=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(subject).issuer_name(issuer).public_key(subject_key.public_key())
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=7)))
    for ext, critical in exts:
        b = b.add_extension(ext, critical)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class Pki:
    """A CA, one TLS leaf for every name and address the servers answer as, and a
    token-signing leaf whose certificate travels in the JWT's x5c header."""

    def __init__(self, d):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("edgepull bench CA")
        ca = _cert(ca_key, ca_name, ca_key, ca_name, [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                           content_commitment=False, key_encipherment=False,
                           data_encipherment=False, key_agreement=False,
                           encipher_only=False, decipher_only=False), True),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ])
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
        tls_key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(n) for n in (LOGIN_HOST, DATA_HOST, "localhost")]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", DATA_IP)]
        leaf = _cert(tls_key, _name(LOGIN_HOST), ca_key, ca_name, [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.SubjectAlternativeName(sans), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (aki, False),
        ])
        self.signing_key = ec.generate_private_key(ec.SECP256R1())
        signer = _cert(self.signing_key, _name("edgepull bench token signer"), ca_key, ca_name, [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                           content_commitment=False, key_encipherment=False,
                           data_encipherment=False, key_agreement=False,
                           encipher_only=False, decipher_only=False), True),
            (aki, False),
        ])
        self.x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                    for c in (signer, ca)]
        self.ca = os.path.join(d, "ca.pem")
        self.cert = os.path.join(d, "tls.crt")
        self.key = os.path.join(d, "tls.key")
        self.cert_dir = os.path.join(d, "certs.d")
        os.makedirs(self.cert_dir, exist_ok=True)
        with open(self.ca, "wb") as f:
            f.write(_pem(ca))
        with open(os.path.join(self.cert_dir, "ca.crt"), "wb") as f:
            f.write(_pem(ca))
        with open(self.cert, "wb") as f:
            f.write(_pem(leaf) + _pem(ca))
        with open(self.key, "wb") as f:
            f.write(tls_key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


# ----------------------------------------------------------------------------------------
# token server


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer:
    """GET /token with Basic credentials -> {"token", "access_token", "expires_in"}. A POST
    (OAuth2 password grant) gets 404, which tells a client to fall back to GET."""

    def __init__(self, pki, users, lifetime=3600):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="edgepull bench"')
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(min(n, 65536))
                self._reply(404, {"errors": [{"code": "UNSUPPORTED", "message": "GET only"}]})

            def do_GET(self):
                status, body = server.issue(self.path, self.headers.get("Authorization", ""))
                self._reply(status, body)

        self.pki = pki
        self.users = users
        self.lifetime = lifetime
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def realm(self):
        return f"https://127.0.0.1:{self.port}/token"

    def issue(self, target, authorization):
        url = urllib.parse.urlsplit(target)
        if url.path != "/token":
            return 404, {"errors": [{"code": "NOT_FOUND"}]}
        q = urllib.parse.parse_qs(url.query)
        if q.get("service", [""])[0] != LOGIN_HOST:
            return 400, {"errors": [{"code": "BAD_REQUEST", "message": "service"}]}
        try:
            user, password = base64.b64decode(authorization.split(" ", 1)[1]).decode().split(":", 1)
        except (IndexError, ValueError):
            return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
        allowed = self.users.get(user)
        if allowed is None or not secrets.compare_digest(allowed[0], password):
            return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
        access = []
        for scope in " ".join(q.get("scope", [])).split():
            rest, _, actions = scope.rpartition(":")
            kind, _, name = rest.partition(":")
            if kind == "repository":
                access.append({"type": kind, "name": name,
                               "actions": [a for a in actions.split(",") if a in allowed[1]]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": self.pki.x5c}
        claims = {"iss": ISSUER, "sub": user, "aud": LOGIN_HOST, "exp": now + self.lifetime,
                  "nbf": now - 5, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        der = self.pki.signing_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        token = signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return 200, {"token": token, "access_token": token, "expires_in": self.lifetime}

    def stop(self):
        self.httpd.shutdown()


# ----------------------------------------------------------------------------------------
# servers


def start_registry(procs, d, storage, pki, tokens, name, read_only, redirect):
    port = free_port()
    yml = (f"version: 0.1\n"
           f"log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n"
           f"storage:\n  filesystem:\n    rootdirectory: {json.dumps(storage)}\n"
           f"  maintenance:\n    uploadpurging:\n      enabled: false\n"
           f"    readonly:\n      enabled: {str(read_only).lower()}\n"
           f"http:\n  addr: 127.0.0.1:{port}\n  secret: edgepull-bench\n"
           f"  tls:\n    certificate: {json.dumps(pki.cert)}\n    key: {json.dumps(pki.key)}\n"
           f"auth:\n  token:\n    realm: {json.dumps(tokens.realm)}\n"
           f"    service: {json.dumps(LOGIN_HOST)}\n    issuer: {json.dumps(ISSUER)}\n"
           f"    rootcertbundle: {json.dumps(pki.ca)}\n")
    if redirect:
        yml += (f"middleware:\n  storage:\n    - name: redirect\n      options:\n"
                f"        baseurl: {json.dumps(redirect)}\n")
    cfg = os.path.join(d, f"registry-{name}.yml")
    with open(cfg, "w") as f:
        f.write(yml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log_path = os.path.join(d, f"registry-{name}.log")
    p = procs.spawn(f"registry {name}", ["docker-registry", "serve", cfg], log_path, env=env)
    wait_accepts("127.0.0.1", port, p, f"registry {name}", log_path)
    return port


def start_nginx(procs, d, storage, pki):
    port = free_port(DATA_IP)
    tmp = os.path.join(d, "nginx-tmp")
    os.makedirs(tmp, exist_ok=True)
    conf = f"""master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  default_type application/octet-stream;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  sendfile on;
  server_tokens off;
  keepalive_timeout 30s;
  log_format data '$status $request_method $uri sent=$body_bytes_sent $ssl_protocol $ssl_cipher "$http_user_agent"';
  server {{
    listen {DATA_IP}:{port} ssl;
    server_name {DATA_HOST};
    ssl_certificate {pki.cert};
    ssl_certificate_key {pki.key};
    access_log {d}/nginx-access.log data;
    root {storage};
    location / {{ limit_except GET {{ deny all; }} }}
  }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    log_path = os.path.join(d, "nginx.log")
    p = procs.spawn("nginx", ["nginx", "-p", d, "-e", f"{d}/nginx-error.log", "-c", path,
                              "-g", "daemon off;"], log_path)
    wait_accepts(DATA_IP, port, p, "nginx", log_path)
    return port


def bind_hosts_file(d):
    """Give this process (already in a private mount namespace) an /etc/hosts naming the
    login server and the data endpoint, for the peers that resolve through the system."""
    path = os.path.join(d, "hosts")
    with open(path, "w") as f:
        f.write(f"127.0.0.1 localhost {LOGIN_HOST}\n{DATA_IP} {DATA_HOST}\n")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "--bind", path, "/etc/hosts"], check=True)


# ----------------------------------------------------------------------------------------
# images


def _write_blob(layout, data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", h), "wb") as f:
        f.write(data)
    return f"sha256:{h}", len(data)


def _layer(layout, size, name):
    """A gzip (deflate stored blocks: what any compressor makes of random bytes) tar layer
    holding one file of `size` random bytes. Written to a temp file and hashed as it goes,
    so memory stays at one chunk."""
    tmp = os.path.join(layout, "layer.tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                info = tarfile.TarInfo(f"data/{name}.bin")
                info.size = size
                info.mtime = 1767225600
                tar.addfile(info, _RandomReader(size))
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    os.rename(tmp, os.path.join(layout, "blobs", "sha256", h.hexdigest()))
    return f"sha256:{h.hexdigest()}", os.path.getsize(os.path.join(layout, "blobs", "sha256",
                                                                    h.hexdigest()))


class _RandomReader(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def build_image(layout, tag, layer_sizes):
    """Add a single-platform (linux/arm64) image under `tag` to the OCI layout; returns the
    blob list [(digest, size)] of config and layers and the manifest's (digest, size)."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layers = [_layer(layout, s, f"{tag}-{i}") for i, s in enumerate(layer_sizes)]
    config = {"created": "2026-01-01T00:00:00Z", "architecture": "arm64", "variant": "v8",
              "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}}
    cfg = _write_blob(layout, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": cfg[0], "size": cfg[1]},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d, "size": s}
                           for d, s in layers]}
    man = _write_blob(layout, json.dumps(manifest).encode())
    index_path = os.path.join(layout, "index.json")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": man[0], "size": man[1],
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(index_path, "w") as f:
        json.dump(index, f)
    return [cfg] + layers, man


class World:
    def __init__(self, scratch, storage_base):
        self.dir = scratch
        shutil.rmtree(scratch, ignore_errors=True)  # logs of an earlier run
        os.makedirs(scratch)
        self.storage_dir = os.path.join(storage_base, "storage")
        shutil.rmtree(self.storage_dir, ignore_errors=True)
        os.makedirs(self.storage_dir)
        self.procs = Procs()
        self.pki = Pki(scratch)
        self.device = ("device-42", secrets.token_hex(16))
        self.pusher = ("pusher", secrets.token_hex(16))
        self.tokens = TokenServer(self.pki, {self.device[0]: (self.device[1], ["pull"]),
                                             self.pusher[0]: (self.pusher[1], ["pull", "push"])})
        self.password_file = os.path.join(scratch, "device.password")
        with open(self.password_file, "w") as f:
            f.write(self.device[1])
        os.chmod(self.password_file, 0o600)
        self.data_port = start_nginx(self.procs, scratch, self.storage_dir, self.pki)
        self.direct_port = start_registry(self.procs, scratch, self.storage_dir, self.pki,
                                          self.tokens, "direct", False, None)
        self.login_port = start_registry(self.procs, scratch, self.storage_dir, self.pki,
                                         self.tokens, "login", True,
                                         f"https://{DATA_HOST}:{self.data_port}/")
        bind_hosts_file(scratch)
        self.images = {}

    @property
    def login(self):
        return f"{LOGIN_HOST}:{self.login_port}"

    @property
    def data_endpoint(self):
        return f"{DATA_HOST}:{self.data_port}"

    def ref(self, tag):
        return f"{self.login}/{REPO}:{tag}"

    def blob_url(self, digest):
        h = digest.split(":", 1)[1]
        return f"https://{self.data_endpoint}/docker/registry/v2/blobs/sha256/{h[:2]}/{h}/data"

    def push_image(self, tag, layer_sizes):
        """Build the image in a temp OCI layout, push it with skopeo (digests preserved),
        and remember its blobs. Returns the bytes a pull transfers (manifest + blobs)."""
        layout = os.path.join(self.dir, f"layout-{tag}")
        shutil.rmtree(layout, ignore_errors=True)
        blobs, manifest = build_image(layout, tag, layer_sizes)
        cmd = ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
               "--dest-cert-dir", self.pki.cert_dir,
               "--dest-creds", f"{self.pusher[0]}:{self.pusher[1]}",
               f"oci:{layout}:{tag}", f"docker://127.0.0.1:{self.direct_port}/{REPO}:{tag}"]
        subprocess.run(cmd, check=True, env=dict(os.environ, TMPDIR=self.dir))
        shutil.rmtree(layout)
        self.images[tag] = {"blobs": blobs, "manifest": manifest,
                            "bytes": manifest[1] + sum(s for _, s in blobs)}
        return self.images[tag]["bytes"]

    def edgepull_config(self, store, images=(), extra=None):
        cfg = {
            "registry": {
                "login_server": self.login,
                "region": "eastus",
                "data_endpoints": [self.data_endpoint],
                "ca_file": self.pki.ca,
                "resolve": {LOGIN_HOST: "127.0.0.1", DATA_HOST: DATA_IP},
                "realm_hosts": [f"127.0.0.1:{self.tokens.port}"],
                "auth": {"username": self.device[0], "password_file": self.password_file},
            },
            "store": {"path": store},
            "platform": PLATFORM,
        }
        if images:
            cfg["images"] = [{"ref": r} for r in images]
        for k, v in (extra or {}).items():
            cfg[k] = v
        return cfg

    def nginx_ciphers(self):
        """The distinct `client: protocol cipher` nginx logged (client: the user agent's
        first word)."""
        seen = set()
        try:
            with open(os.path.join(self.dir, "nginx-access.log")) as f:
                for line in f:
                    head, _, ua = line.partition('"')
                    parts = head.split()
                    if len(parts) >= 6:
                        agent = (ua.strip().strip('"').split() or ["-"])[0].split("/")[0]
                        seen.add(f"{agent}: {parts[4]} {parts[5]}")
        except OSError:
            pass
        return sorted(seen)

    def server_pids(self):
        """The login server and the data endpoint (the token server runs in this process)."""
        return [p.pid for (n, p) in self.procs.procs if n in ("registry login", "nginx")]

    def stop(self):
        self.procs.stop_all()
        self.tokens.stop()
        shutil.rmtree(self.storage_dir, ignore_errors=True)
