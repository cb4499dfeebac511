"""echokit_fast.backends.tts"""
