"""The browser front end: the pages the server serves to a web browser, which then talks to
it as an EchoKit device over ``/ws/{id}`` (:mod:`echokit_fast.devices.echokit`).

``routes.py`` serves ``GET /`` (the talk page) and its files under ``/console/static/``,
``status.py`` the status page (``/console/status``) and ``config.py`` the config editor
(``/console/config``), with their data under ``/console/api`` (``access.py``'s rule);
``static/`` holds the files as they are served (hand-written HTML, CSS and JavaScript modules: no
build step, nothing loaded from elsewhere).
"""
