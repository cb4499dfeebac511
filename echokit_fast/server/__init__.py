"""echokit_fast.server"""
