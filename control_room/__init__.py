"""The control room's tools: daily/weekly/monthly reports, Grafana boards and their push, alert receivers.

Above the aggregator: they read what it stored (InfluxDB) and published (levels, notices); the
aggregator never imports them.
"""
