"""The job the rq peer runs: the same work as the project's bench handler (`cat`: give the payload back)."""


def echo(payload):
    return payload
