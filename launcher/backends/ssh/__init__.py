"""The Fabric SSH layer: ``--infra ssh/<pool>`` on the hosts of an SSH node pool.

``pools`` reads the pool file, ``client`` is one connection, ``transfer`` the SFTP sync, ``leases``
the local half of "one job per host", ``hostside`` the housekeeping run on the host, ``backend``
maps it all onto the backend interface. Importing this package imports nothing heavy.
"""
