mod gate;
mod shape;
