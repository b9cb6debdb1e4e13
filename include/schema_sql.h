/*
 * schema_sql.h — the daemon's SQL objects (sql/oauth-refreshd.sql), compiled
 * in by CMake so oauth-refreshctl migrate needs no installed data file.
 */
#ifndef OAUTH_SCHEMA_SQL_H
#define OAUTH_SCHEMA_SQL_H

/* The schema version this build creates and requires. */
#define OAUTH_SCHEMA_VERSION 3

/* NUL-terminated text of sql/oauth-refreshd.sql. */
extern const char schema_sql[];

#endif
