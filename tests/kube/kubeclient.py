"""A small Kubernetes API client on the Python standard library, for the
real-API-server tests (tests/kube): HTTPS with a client certificate or a
bearer token, JSON in and out, errors as ApiError carrying the Status."""
import json
import ssl
import http.client
import urllib.parse


class ApiError(Exception):
    def __init__(self, code, body, method, path):
        self.code = code
        self.body = body
        self.status = body if isinstance(body, dict) else {}
        self.reason = self.status.get("reason", "")
        self.message = self.status.get("message", str(body)[:300])
        super().__init__(f"{method} {path}: {code} {self.reason}: {self.message}")


class Client:
    def __init__(self, server, ca, cert=None, key=None, token=None, timeout=30):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname, u.port or 443
        self.ctx = ssl.create_default_context(cafile=ca)
        if cert:
            self.ctx.load_cert_chain(cert, key)
        self.token = token
        self.timeout = timeout
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        return self.conn

    def request(self, method, path, body=None, ctype="application/json", query=None, raw=False):
        if query:
            path += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers["Content-Type"] = ctype
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        for attempt in (0, 1):
            try:
                c = self._conn()
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                payload = r.read()
                break
            except (http.client.HTTPException, ConnectionError, ssl.SSLError, OSError):
                self.close()
                if attempt:
                    raise
        if raw:
            return r.status, payload
        try:
            obj = json.loads(payload) if payload else None
        except ValueError:
            obj = payload.decode(errors="replace")
        if r.status >= 300:
            raise ApiError(r.status, obj, method, path)
        return obj

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # conveniences
    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path, body, ctype="application/merge-patch+json", **kw):
        return self.request("PATCH", path, body, ctype=ctype, **kw)

    def delete(self, path, body=None, **kw):
        return self.request("DELETE", path, body, **kw)

    def exists(self, path):
        try:
            self.get(path)
            return True
        except ApiError as e:
            if e.code == 404:
                return False
            raise


def from_env(envfile, token=None):
    """A client from the env file that `env.sh start DIR` writes (admin
    client certificate, or the given bearer token instead)."""
    env = read_env(envfile)
    if token:
        return Client(env["KUBE_API"], env["KUBE_CA"], token=token)
    return Client(env["KUBE_API"], env["KUBE_CA"], env["KUBE_ADMIN_CERT"], env["KUBE_ADMIN_KEY"])


def read_env(envfile):
    env = {}
    with open(envfile) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                if v.startswith("'") and v.endswith("'"):
                    v = v[1:-1]
                env[k] = v
    return env
