DROP TABLE event_watches;
