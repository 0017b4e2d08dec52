"""RabbitMQ (AMQP 0-9-1): the broker (``amqp.broker``), the ``rpc://`` result backend (``amqp.rpc``) and
the connections both use (``amqp.client``), declaring what Celery 5.7 declares.

Nothing is imported here; aiormq and pamqp are imported when a connection is made
(``pip install 'celeriac[amqp]'``).
"""
