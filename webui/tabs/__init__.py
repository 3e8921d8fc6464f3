"""One module per tab; each has `build(ctx: webui.blocks.TabContext, task: chat.tasks.Task) -> TabParts`."""
