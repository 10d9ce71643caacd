"""Agent ids: how a client names the agent it runs (CopilotKit's ``agentId``,
``/agui/agents/{id}``). Every deployment has ``default``; others come from the configuration's
``agents`` (:class:`agent_server.config.AgentProfile`)."""

DEFAULT_AGENT = "default"
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
