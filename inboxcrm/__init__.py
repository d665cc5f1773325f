"""inboxcrm: a self-hosted sales CRM that lives in the team's inbox."""

__version__ = "0.1.0"
