"""fastsmtp's benchmark suite (see bench/README.md).

- ``test_micro.py``: pytest-benchmark micro benchmarks of the wire layer
  (``make bench``), both implementations side by side with references.
- ``load.py``: the loopback load benchmark against aiosmtpd and Postfix's
  smtp-sink (``python -m bench.load``, ``make bench-load``).
- ``memory.py``: peak RSS with idle connections and with one big message in
  flight, and NOOP latency under load (``python -m bench.memory``).
- ``client.py``: the bundled asyncio load client, used when Postfix's
  smtp-source is not installed (``python -m bench.client``).
- ``floor.py``: the Python floor, a do-nothing SMTP responder that the load
  benchmark runs beside the others: what Python and the event loop cost alone.
- ``servers.py``, ``model.py``, ``report.py``, ``bodies.py``: starting the
  servers, the measured data, the reports (``python -m bench.report``
  re-renders them from ``results/latest.json``), the message bodies.
"""
