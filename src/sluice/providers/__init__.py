"""Provider adapters: pure translation between the OpenAI wire format and each provider's."""
