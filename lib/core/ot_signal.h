/* ot_signal: SIGINT/SIGTERM set a flag that the main loops check. */
#ifndef OT_SIGNAL_H
#define OT_SIGNAL_H

#include <signal.h>

extern volatile sig_atomic_t ot_stop;

/* Installs handlers for SIGINT and SIGTERM (without SA_RESTART) and ignores SIGPIPE. */
void ot_signal_install(void);

#endif
