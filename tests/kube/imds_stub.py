"""An in-process EC2 metadata stand-in for tests/kube, for what the standalone
imds-sim cannot be told at run time: a scheduled maintenance event that turns
from active to canceled (spotd's undo). Formats as protocols.md §1 and
tests/sim/imds_sim.c: IMDSv2 token PUT, TAB-indented JSON, 404 as XHTML
text/plain. Everything else (the spot reclaim) uses the real imds-sim."""
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_FOUND = ('<?xml version="1.0" encoding="iso-8859-1"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 '
             'Transitional//EN"\n\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n<html xmlns='
             '"http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n <head>\n  <title>404 - Not Found</title>\n'
             ' </head>\n <body>\n  <h1>404 - Not Found</h1>\n </body>\n</html>\n')


def imds_time(t):
    return time.strftime("%d %b %Y %H:%M:%S GMT", time.gmtime(t))


class ImdsStub:
    def __init__(self):
        self.scheduled = None   # list of event dicts, or None (404)
        self.spot = None        # {"action":..., "time":...} or None
        self.tokens = set()
        self.lock = threading.Lock()
        stub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, body, ctype="text/plain"):
                b = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def do_PUT(self):
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if self.path != "/latest/api/token" or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return self.send(400, "")
                tok = secrets.token_urlsafe(33)[:44]
                with stub.lock:
                    stub.tokens.add(tok)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", ttl)
                self.send_header("Content-Length", str(len(tok)))
                self.end_headers()
                self.wfile.write(tok.encode())

            def do_GET(self):
                with stub.lock:
                    sched, spot = stub.scheduled, stub.spot
                p = self.path
                if p == "/latest/meta-data/instance-id":
                    return self.send(200, "i-0123456789abcdef0")
                if p == "/latest/meta-data/events/maintenance/scheduled" and sched is not None:
                    return self.send(200, json.dumps(sched, indent="\t"), "application/json")
                if p == "/latest/meta-data/spot/instance-action" and spot is not None:
                    return self.send(200, json.dumps(spot, indent="\t"), "application/json")
                self.send(404, NOT_FOUND, "text/plain; charset=utf-8")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_scheduled(self, code, state, event_id, not_before, not_after):
        with self.lock:
            self.scheduled = [{"NotBefore": imds_time(not_before), "Code": code,
                               "Description": f"scheduled {code} (tests/kube)", "EventId": event_id,
                               "NotAfter": imds_time(not_after), "State": state}]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
