task_default_queue = "sample"


class Config:
    worker_concurrency = 5
