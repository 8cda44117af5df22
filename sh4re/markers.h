/* The marker files in an agent's state dir through which the daemon and the harness talk
 * without a socket: each side creates or removes them, the other looks (the harness watches
 * the directory with inotify). */
#pragma once

/* The operator paused the agent (set_paused): the harness takes no new turns. */
#define MARKER_PAUSED "hyperhive-paused"
/* The model called request_next_turn: the harness runs another turn after this one. */
#define MARKER_NEXT_TURN "hyperhive-next-turn"
/* A graceful stop: the daemon asks the harness to finish its turn and take no new one ... */
#define MARKER_STOP_REQUESTED "hyperhive-stop-requested"
/* ... and the harness answers that no turn runs any more. */
#define MARKER_QUIESCED "hyperhive-quiesced"
