"""Report output shared by the bot, the Space and the CLI: card section, summary, folder, plots."""
