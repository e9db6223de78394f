"""The plugin is tested the way pytest plugins are: with pytester running inner sessions."""

pytest_plugins = ["pytester"]
