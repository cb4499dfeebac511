"""echokit_fast.devices.xiaozhi"""
