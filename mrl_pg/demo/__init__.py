"""``mrl-pg demo``: exact against adaptive search on seeded vectors (:mod:`~mrl_pg.demo.vectors`)
or on a small shipped text corpus embedded through the OpenAI SDK (:mod:`~mrl_pg.demo.text`)."""
