"""The fake sites of the sandbox, one module each; :func:`tests.sandbox.server.create_app`
puts them together on one server.

* :mod:`.root` - ``/``, ``/robots.txt``, ``/private/``;
* :mod:`.civitai` - the Civitai-like images API;
* :mod:`.civitai_models` - the Civitai-like models API (showcase images per model version);
* :mod:`.lexica` - the Lexica-like search API;
* :mod:`.gallery` - the HTML gallery;
* :mod:`.images` - the catalog's image files, for every source;
* :mod:`.jsgallery` - a gallery whose items appear only after JavaScript runs;
* :mod:`.optout` - every opt-out mechanism a crawler must honour;
* :mod:`.aipref` - AI usage preferences (Content-Signal, Content-Usage) and rights embedded in files;
* :mod:`.redirects` - ``/redirect?to=``: a 302 to another loopback site;
* :mod:`.browsertraps` - ``/browsertrap/``: a page whose iframe and script navigate by themselves;
* :mod:`.hostile` - server misbehaviour by path (``--hostile``; a middleware, not routes).

Route modules expose ``add_routes(app)``; handlers read the catalog and the config from the
application (:mod:`tests.sandbox.config`).
"""
