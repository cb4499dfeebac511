"""echokit_fast.conversation"""
