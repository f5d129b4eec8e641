"""The running system's parts, built once from settings and handed around explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.bus.embedded import EmbeddedEventLog
from quartermaster.bus.protocol import EventLog
from quartermaster.config import Settings, load_server_key
from quartermaster.storage import create_db_engine, make_session_factory, upgrade_database


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    event_log: EventLog
    server_key: bytes

    def close(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    server_key = load_server_key(settings)
    engine = create_db_engine(settings.resolved_database_url)
    if migrate:
        upgrade_database(engine)
    session_factory = make_session_factory(engine)
    return Runtime(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        event_log=EmbeddedEventLog(session_factory),
        server_key=server_key,
    )
