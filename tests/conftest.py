pytest_plugins = ["tests.fix_corpus", "tests.fix_db", "tests.fix_openai"]
