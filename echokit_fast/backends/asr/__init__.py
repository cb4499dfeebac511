"""echokit_fast.backends.asr"""
