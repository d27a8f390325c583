/* CRIU compel's <compel/loglevels.h>: log levels (COMPEL_LOG_MSG is always printed). */
#ifndef COMPEL_LOGLEVELS_H
#define COMPEL_LOGLEVELS_H

#ifndef COMPEL_LOG_ERROR
#define COMPEL_LOG_MSG 0
#define COMPEL_LOG_ERROR 1
#define COMPEL_LOG_WARN 2
#define COMPEL_LOG_INFO 3
#define COMPEL_LOG_DEBUG 4
#define COMPEL_DEFAULT_LOGLEVEL COMPEL_LOG_WARN
#endif

#endif /* COMPEL_LOGLEVELS_H */
