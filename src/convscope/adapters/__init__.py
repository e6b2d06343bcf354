"""Adapters from other frameworks' models to convscope graphs. Each needs its framework
installed (``pip install 'convscope[torch]'``); the core never imports one."""
