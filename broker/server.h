/* server.h — the service: worker threads (one h2o evloop each, see http/breq.h for what
 * a worker owns), the listener shared by them, accept balancing, h2o set-up, SIGTERM. */
#ifndef BROKER_SERVER_H
#define BROKER_SERVER_H
#include "config.h"

/* Run the service until SIGTERM/SIGINT; returns the process exit code. */
int server_run(const config_t *cfg);
#endif
