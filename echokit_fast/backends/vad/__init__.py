"""echokit_fast.backends.vad"""
