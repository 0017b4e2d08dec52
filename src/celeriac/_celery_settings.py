"""The names of Celery's settings, and its old upper-case names with the new name each stands for.

A table of names only (no defaults, no meaning): celeriac's own settings, with their defaults and types,
are in ``celeriac.config``. A Celery name celeriac does not implement yet loads with a warning instead
of failing the whole configuration, so a Celery or Django settings module can be pointed at celeriac
as it is.
"""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.split()


#: Every setting name of Celery 5 (lower case), a line per first word.
CELERY_NAMES: frozenset[str] = frozenset(
    _words(
        """
    accept_content
    arangodb_backend_settings
    azureblockblob_base_path azureblockblob_connection_timeout azureblockblob_container_name
    azureblockblob_read_timeout azureblockblob_retry_increment_base
    azureblockblob_retry_initial_backoff_sec azureblockblob_retry_max_attempts
    beat_cron_starting_deadline beat_enable_remote_control beat_max_loop_interval
    beat_remote_control_max_tick_age beat_schedule beat_schedule_filename beat_scheduler beat_sync_every
    broker_channel_error_retry broker_connection_max_retries broker_connection_retry
    broker_connection_retry_on_startup broker_connection_timeout broker_failover_strategy
    broker_heartbeat broker_heartbeat_checkrate broker_host broker_login_method
    broker_native_delayed_delivery_queue_type broker_password broker_pool_acquire_timeout
    broker_pool_limit broker_port broker_read_url broker_transport broker_transport_options broker_url
    broker_use_ssl broker_user broker_vhost broker_write_url
    cache_backend cache_backend_options
    cassandra_auth_kwargs cassandra_auth_provider cassandra_bundle_path cassandra_entry_ttl
    cassandra_keyspace cassandra_options cassandra_port cassandra_read_consistency cassandra_servers
    cassandra_table cassandra_write_consistency
    control_exchange control_queue_durable control_queue_exclusive control_queue_expires
    control_queue_ttl
    cosmosdbsql_collection_name cosmosdbsql_consistency_level cosmosdbsql_database_name
    cosmosdbsql_max_retry_attempts cosmosdbsql_max_retry_wait_time
    couchbase_backend_settings
    database_create_tables_at_setup database_engine_callback database_engine_options
    database_short_lived_sessions database_table_names database_table_schemas database_url
    elasticsearch_max_retries elasticsearch_retry_on_timeout elasticsearch_save_meta_as_text
    elasticsearch_timeout
    enable_utc
    event_exchange event_queue_durable event_queue_exclusive event_queue_expires event_queue_prefix
    event_queue_ttl event_serializer
    gcs_base_path gcs_bucket gcs_project gcs_ttl
    imports
    include
    mongodb_backend_settings
    redis_backend_use_ssl redis_db redis_host redis_max_connections redis_password redis_port
    redis_retry_on_timeout redis_socket_connect_timeout redis_socket_keepalive redis_socket_timeout
    redis_username
    result_accept_content result_backend result_backend_always_retry
    result_backend_base_sleep_between_retries_ms result_backend_max_retries
    result_backend_max_sleep_between_retries_ms result_backend_transport_options result_cache_max
    result_chord_expires result_chord_join_timeout result_chord_retry_interval result_compression
    result_exchange result_exchange_type result_expires result_extended result_failure_expires
    result_persistent result_serializer
    s3_access_key_id s3_base_path s3_bucket s3_endpoint_url s3_region s3_secret_access_key
    security_cert_store security_certificate security_digest security_key security_key_password
    task_acks_late task_acks_on_failure task_acks_on_failure_or_timeout task_acks_on_timeout
    task_allow_error_cb_on_chord_header task_always_eager task_annotations task_compression
    task_create_missing_queue_exchange_type task_create_missing_queue_type task_create_missing_queues
    task_default_delivery_mode task_default_exchange task_default_exchange_type task_default_priority
    task_default_queue task_default_queue_type task_default_rate_limit task_default_routing_key
    task_eager_propagates task_ignore_result task_inherit_parent_priority task_protocol
    task_publish_retry task_publish_retry_policy task_queue_max_priority task_queues
    task_reject_on_worker_lost task_remote_tracebacks task_repr_maxlevels task_retry_on_worker_lost
    task_routes task_send_sent_event task_serializer task_soft_time_limit task_store_eager_result
    task_store_errors_even_if_ignored task_time_limit task_track_started
    timezone
    worker_agent worker_autoscaler worker_cancel_long_running_tasks_on_connection_loss
    worker_concurrency worker_consumer worker_deduplicate_successful_tasks worker_detect_quorum_queues
    worker_direct worker_disable_prefetch worker_disable_rate_limits
    worker_enable_prefetch_count_reduction worker_enable_remote_control
    worker_enable_soft_shutdown_on_idle worker_eta_task_limit worker_hijack_root_logger worker_log_color
    worker_log_datefmt worker_log_format worker_lost_wait worker_max_memory_per_child
    worker_max_tasks_per_child worker_pool worker_pool_putlocks worker_pool_restarts
    worker_pool_start_method worker_prefetch_multiplier worker_proc_alive_timeout
    worker_redirect_stdouts worker_redirect_stdouts_level worker_send_task_events
    worker_soft_shutdown_timeout worker_state_db worker_task_log_datefmt worker_task_log_format
    worker_timer worker_timer_precision
"""
    )
)

#: Celery's old (before 4.0) upper-case names that are the new name in upper case (``BROKER_URL``).
_UPPER = _words(
    """
    AZUREBLOCKBLOB_BASE_PATH AZUREBLOCKBLOB_CONNECTION_TIMEOUT AZUREBLOCKBLOB_CONTAINER_NAME
    AZUREBLOCKBLOB_READ_TIMEOUT AZUREBLOCKBLOB_RETRY_INCREMENT_BASE
    AZUREBLOCKBLOB_RETRY_INITIAL_BACKOFF_SEC AZUREBLOCKBLOB_RETRY_MAX_ATTEMPTS
    BROKER_CHANNEL_ERROR_RETRY BROKER_CONNECTION_MAX_RETRIES BROKER_CONNECTION_RETRY
    BROKER_CONNECTION_RETRY_ON_STARTUP BROKER_CONNECTION_TIMEOUT BROKER_FAILOVER_STRATEGY
    BROKER_HEARTBEAT BROKER_HEARTBEAT_CHECKRATE BROKER_HOST BROKER_LOGIN_METHOD
    BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE BROKER_PASSWORD BROKER_POOL_ACQUIRE_TIMEOUT
    BROKER_POOL_LIMIT BROKER_PORT BROKER_READ_URL BROKER_TRANSPORT BROKER_TRANSPORT_OPTIONS BROKER_URL
    BROKER_USER BROKER_USE_SSL BROKER_VHOST BROKER_WRITE_URL CASSANDRA_AUTH_KWARGS
    CASSANDRA_AUTH_PROVIDER CASSANDRA_BUNDLE_PATH CASSANDRA_ENTRY_TTL CASSANDRA_KEYSPACE
    CASSANDRA_OPTIONS CASSANDRA_PORT CASSANDRA_READ_CONSISTENCY CASSANDRA_SERVERS CASSANDRA_TABLE
    CASSANDRA_WRITE_CONSISTENCY CONTROL_EXCHANGE CONTROL_QUEUE_DURABLE CONTROL_QUEUE_EXCLUSIVE
    CONTROL_QUEUE_EXPIRES CONTROL_QUEUE_TTL COSMOSDBSQL_COLLECTION_NAME COSMOSDBSQL_CONSISTENCY_LEVEL
    COSMOSDBSQL_DATABASE_NAME COSMOSDBSQL_MAX_RETRY_ATTEMPTS COSMOSDBSQL_MAX_RETRY_WAIT_TIME
    DATABASE_CREATE_TABLES_AT_SETUP DATABASE_ENGINE_CALLBACK DATABASE_TABLE_SCHEMAS ENABLE_UTC
    GCS_BASE_PATH GCS_BUCKET GCS_PROJECT GCS_TTL RESULT_ACCEPT_CONTENT S3_ACCESS_KEY_ID S3_BASE_PATH
    S3_BUCKET S3_ENDPOINT_URL S3_REGION S3_SECRET_ACCESS_KEY
"""
)

#: Old names that are ``CELERY_`` and the new name in upper case (``CELERY_RESULT_BACKEND``).
_PREFIXED = _words(
    """
    CELERY_ACCEPT_CONTENT CELERY_ARANGODB_BACKEND_SETTINGS CELERY_CACHE_BACKEND
    CELERY_CACHE_BACKEND_OPTIONS CELERY_COUCHBASE_BACKEND_SETTINGS CELERY_ELASTICSEARCH_MAX_RETRIES
    CELERY_ELASTICSEARCH_RETRY_ON_TIMEOUT CELERY_ELASTICSEARCH_SAVE_META_AS_TEXT
    CELERY_ELASTICSEARCH_TIMEOUT CELERY_EVENT_EXCHANGE CELERY_EVENT_QUEUE_DURABLE
    CELERY_EVENT_QUEUE_EXCLUSIVE CELERY_EVENT_QUEUE_EXPIRES CELERY_EVENT_QUEUE_PREFIX
    CELERY_EVENT_QUEUE_TTL CELERY_EVENT_SERIALIZER CELERY_IMPORTS CELERY_INCLUDE
    CELERY_MONGODB_BACKEND_SETTINGS CELERY_REDIS_BACKEND_USE_SSL CELERY_REDIS_DB CELERY_REDIS_HOST
    CELERY_REDIS_MAX_CONNECTIONS CELERY_REDIS_PASSWORD CELERY_REDIS_PORT CELERY_REDIS_RETRY_ON_TIMEOUT
    CELERY_REDIS_SOCKET_CONNECT_TIMEOUT CELERY_REDIS_SOCKET_KEEPALIVE CELERY_REDIS_SOCKET_TIMEOUT
    CELERY_REDIS_USERNAME CELERY_RESULT_BACKEND CELERY_RESULT_BACKEND_ALWAYS_RETRY
    CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS CELERY_RESULT_BACKEND_MAX_RETRIES
    CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS
    CELERY_RESULT_CHORD_EXPIRES CELERY_RESULT_CHORD_JOIN_TIMEOUT CELERY_RESULT_CHORD_RETRY_INTERVAL
    CELERY_RESULT_COMPRESSION CELERY_RESULT_EXCHANGE CELERY_RESULT_EXCHANGE_TYPE CELERY_RESULT_EXTENDED
    CELERY_RESULT_FAILURE_EXPIRES CELERY_RESULT_PERSISTENT CELERY_RESULT_SERIALIZER
    CELERY_SECURITY_CERTIFICATE CELERY_SECURITY_CERT_STORE CELERY_SECURITY_DIGEST CELERY_SECURITY_KEY
    CELERY_SECURITY_KEY_PASSWORD CELERY_TASK_PROTOCOL CELERY_TASK_PUBLISH_RETRY
    CELERY_TASK_PUBLISH_RETRY_POLICY CELERY_TASK_SERIALIZER CELERY_TIMEZONE CELERY_WORKER_DIRECT
"""
)

#: The other old names, each followed by the new name it stands for.
_RENAMED = _words(
    """
    CELERYBEAT_CRON_STARTING_DEADLINE beat_cron_starting_deadline
    CELERYBEAT_ENABLE_REMOTE_CONTROL beat_enable_remote_control
    CELERYBEAT_MAX_LOOP_INTERVAL beat_max_loop_interval
    CELERYBEAT_REMOTE_CONTROL_MAX_TICK_AGE beat_remote_control_max_tick_age
    CELERYBEAT_SCHEDULE beat_schedule
    CELERYBEAT_SCHEDULER beat_scheduler
    CELERYBEAT_SCHEDULE_FILENAME beat_schedule_filename
    CELERYBEAT_SYNC_EVERY beat_sync_every
    CELERYD_AGENT worker_agent
    CELERYD_AUTOSCALER worker_autoscaler
    CELERYD_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS worker_cancel_long_running_tasks_on_connection_loss
    CELERYD_CONCURRENCY worker_concurrency
    CELERYD_CONSUMER worker_consumer
    CELERYD_DEDUPLICATE_SUCCESSFUL_TASKS worker_deduplicate_successful_tasks
    CELERYD_DETECT_QUORUM_QUEUES worker_detect_quorum_queues
    CELERYD_DISABLE_PREFETCH worker_disable_prefetch
    CELERYD_ENABLE_PREFETCH_COUNT_REDUCTION worker_enable_prefetch_count_reduction
    CELERYD_ENABLE_SOFT_SHUTDOWN_ON_IDLE worker_enable_soft_shutdown_on_idle
    CELERYD_ETA_TASK_LIMIT worker_eta_task_limit
    CELERYD_HIJACK_ROOT_LOGGER worker_hijack_root_logger
    CELERYD_LOG_COLOR worker_log_color
    CELERYD_LOG_DATEFMT worker_log_datefmt
    CELERYD_LOG_FORMAT worker_log_format
    CELERYD_MAX_MEMORY_PER_CHILD worker_max_memory_per_child
    CELERYD_MAX_TASKS_PER_CHILD worker_max_tasks_per_child
    CELERYD_POOL worker_pool
    CELERYD_POOL_PUTLOCKS worker_pool_putlocks
    CELERYD_POOL_RESTARTS worker_pool_restarts
    CELERYD_POOL_START_METHOD worker_pool_start_method
    CELERYD_PREFETCH_MULTIPLIER worker_prefetch_multiplier
    CELERYD_PROC_ALIVE_TIMEOUT worker_proc_alive_timeout
    CELERYD_SOFT_SHUTDOWN_TIMEOUT worker_soft_shutdown_timeout
    CELERYD_STATE_DB worker_state_db
    CELERYD_TASK_LOG_DATEFMT worker_task_log_datefmt
    CELERYD_TASK_LOG_FORMAT worker_task_log_format
    CELERYD_TASK_SOFT_TIME_LIMIT task_soft_time_limit
    CELERYD_TASK_TIME_LIMIT task_time_limit
    CELERYD_TIMER worker_timer
    CELERYD_TIMER_PRECISION worker_timer_precision
    CELERYD_WORKER_LOST_WAIT worker_lost_wait
    CELERY_ACKS_LATE task_acks_late
    CELERY_ACKS_ON_FAILURE task_acks_on_failure
    CELERY_ACKS_ON_FAILURE_OR_TIMEOUT task_acks_on_failure_or_timeout
    CELERY_ACKS_ON_TIMEOUT task_acks_on_timeout
    CELERY_ALLOW_ERROR_CB_ON_CHORD_HEADER task_allow_error_cb_on_chord_header
    CELERY_ALWAYS_EAGER task_always_eager
    CELERY_ANNOTATIONS task_annotations
    CELERY_CREATE_MISSING_QUEUES task_create_missing_queues
    CELERY_CREATE_MISSING_QUEUE_EXCHANGE_TYPE task_create_missing_queue_exchange_type
    CELERY_CREATE_MISSING_QUEUE_TYPE task_create_missing_queue_type
    CELERY_DEFAULT_DELIVERY_MODE task_default_delivery_mode
    CELERY_DEFAULT_EXCHANGE task_default_exchange
    CELERY_DEFAULT_EXCHANGE_TYPE task_default_exchange_type
    CELERY_DEFAULT_PRIORITY task_default_priority
    CELERY_DEFAULT_QUEUE task_default_queue
    CELERY_DEFAULT_QUEUE_TYPE task_default_queue_type
    CELERY_DEFAULT_RATE_LIMIT task_default_rate_limit
    CELERY_DEFAULT_ROUTING_KEY task_default_routing_key
    CELERY_DISABLE_RATE_LIMITS worker_disable_rate_limits
    CELERY_EAGER_PROPAGATES_EXCEPTIONS task_eager_propagates
    CELERY_ENABLE_REMOTE_CONTROL worker_enable_remote_control
    CELERY_IGNORE_RESULT task_ignore_result
    CELERY_INHERIT_PARENT_PRIORITY task_inherit_parent_priority
    CELERY_MAX_CACHED_RESULTS result_cache_max
    CELERY_MESSAGE_COMPRESSION task_compression
    CELERY_QUEUES task_queues
    CELERY_QUEUE_MAX_PRIORITY task_queue_max_priority
    CELERY_REDIRECT_STDOUTS worker_redirect_stdouts
    CELERY_REDIRECT_STDOUTS_LEVEL worker_redirect_stdouts_level
    CELERY_REJECT_ON_WORKER_LOST task_reject_on_worker_lost
    CELERY_REMOTE_TRACEBACKS task_remote_tracebacks
    CELERY_REPR_MAXLEVELS task_repr_maxlevels
    CELERY_RESULT_DBURI database_url
    CELERY_RESULT_DB_SHORT_LIVED_SESSIONS database_short_lived_sessions
    CELERY_RESULT_DB_TABLENAMES database_table_names
    CELERY_RESULT_ENGINE_OPTIONS database_engine_options
    CELERY_RETRY_ON_WORKER_LOST task_retry_on_worker_lost
    CELERY_ROUTES task_routes
    CELERY_SEND_EVENTS worker_send_task_events
    CELERY_SEND_TASK_SENT_EVENT task_send_sent_event
    CELERY_STORE_EAGER_RESULT task_store_eager_result
    CELERY_STORE_ERRORS_EVEN_IF_IGNORED task_store_errors_even_if_ignored
    CELERY_TASK_RESULT_EXPIRES result_expires
    CELERY_TRACK_STARTED task_track_started
"""
)

#: Celery's old upper-case name -> the new name (``CELERYD_CONCURRENCY`` -> ``worker_concurrency``).
OLD_NAMES: dict[str, str] = {
    **{old: old.lower() for old in _UPPER},
    **{old: old[len("CELERY_") :].lower() for old in _PREFIXED},
    **dict(zip(_RENAMED[0::2], _RENAMED[1::2], strict=True)),
}
