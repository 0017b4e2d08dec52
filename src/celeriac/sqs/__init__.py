"""Amazon SQS: the ``sqs://`` broker (``broker``), laid out as kombu's SQS transport lays it out.

Needs the ``sqs`` extra (aiobotocore). Nothing outside this package imports its private modules.
"""
