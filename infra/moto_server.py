"""moto's server with requests serialised.

moto's stock server handles requests on threads without locking its backends, so two
concurrent conditional writes can both win. Every request here runs under one lock, which
makes moto behave like the single-writer service the code under test expects.

Usage: python infra/moto_server.py [moto_server args, e.g. -H 127.0.0.1 -p 5000]
"""

import threading

import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication


class SerialisedDispatcher(DomainDispatcherApplication):
    _lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            # Materialise the response inside the lock: werkzeug may stream lazily.
            chunks = list(super().__call__(environ, start_response))
        return chunks


moto.server.DomainDispatcherApplication = SerialisedDispatcher

if __name__ == "__main__":
    moto.server.main()
