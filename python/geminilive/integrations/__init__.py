"""geminilive inside the voice frameworks: :mod:`geminilive.integrations.pipecat`.

Each module imports its framework (an extra: ``pip install 'geminilive[pipecat]'``); importing
``geminilive`` imports none of them.
"""
