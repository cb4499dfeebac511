"""echokit_fast.backends"""
